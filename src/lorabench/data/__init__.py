"""data: read rows (sources), build texts, labels, splits and class weights (splits), check them (checks); the
types the other steps receive (types)."""
from lorabench.data.checks import data_checks
from lorabench.data.sources import BUNDLED, bundled_path, parse_json_rows, read_source, read_table
from lorabench.data.splits import (
                                   Split,
                                   Splits,
                                   build_texts,
                                   class_weights,
                                   fingerprint,
                                   label_vocabulary,
                                   load_splits,
                                   study_split,
                                   template_fields,
)

__all__ = ["BUNDLED", "Split", "Splits", "build_texts", "bundled_path", "class_weights", "data_checks", "fingerprint",
           "label_vocabulary", "load_splits", "parse_json_rows", "read_source", "read_table", "study_split",
           "template_fields"]
