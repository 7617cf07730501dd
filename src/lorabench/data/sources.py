"""Reading rows: CSV/TSV/JSON/JSONL/Parquet files, `save_to_disk` folders, the bundled disaster
tweets and hub datasets; values kept as written (ids, numbers), encodings and delimiters.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from lorabench.config.schema import DataConfig
from lorabench.errors import DataError, LorabenchWarning

BUNDLED = "disaster_tweets"
BUNDLED_LABEL_NAMES = ["not_disaster", "disaster"]
TABLE_SUFFIXES = {".csv", ".tsv", ".json", ".jsonl", ".parquet"}

def bundled_path(name: str = "train.csv") -> Path:
    return Path(str(resources.files("lorabench") / "datasets" / BUNDLED / name))


DELIMITERS = ",;\t|"


def sniff_delimiter(path: Path, encoding: str) -> str:
    """The delimiter of a CSV file: the one of `, ; tab |` that occurs most often in its header line
    (column names rarely hold delimiters; texts in the rows often do); `,` on a tie or when none occurs."""
    with open(path, encoding=encoding, newline="") as f:
        header = f.readline()
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def _object_frame(records: list[dict]) -> pd.DataFrame:
    """Rows -> frame with every column of dtype object: values exactly as parsed (no int -> float widening)."""
    columns: dict[str, None] = {}
    for r in records:
        columns.update(dict.fromkeys(r))
    return pd.DataFrame({c: pd.Series([r.get(c) for r in records], dtype=object) for c in columns})


def parse_json_rows(text: str, where: str) -> pd.DataFrame:
    """JSON (an array of objects) or JSON lines -> frame; strings stay strings ("0007"), numbers stay numbers."""
    import json
    stripped = text.strip()
    if not stripped:
        return pd.DataFrame()
    try:
        if stripped.startswith("["):
            records = json.loads(stripped)
        else:
            records = [json.loads(line) for line in stripped.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON or JSON lines (line {e.lineno}: {e.msg})") from e
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataError(f"{where}: expected JSON objects, one per row (a list of objects, or one object per line)")
    return _object_frame(records)


def read_table(path: str | Path, *, encoding: str = "utf-8", delimiter: str | None = None) -> pd.DataFrame:
    """Rows of a CSV / TSV / JSON / JSONL / Parquet file or a `save_to_disk` folder.

    Values are kept as written: CSV cells are strings (ids keep leading zeros, a number renders
    the same in every split), JSON values keep their JSON type, empty cells are missing (NaN/None).
    `delimiter=None` detects `, ; tab |` in CSV files. Raises `DataError` naming the file and the
    problem (missing, unreadable, wrong encoding, malformed); the cause is kept in `__cause__`.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data file not found: {p}")
    suffix = p.suffix.lower()
    if not p.is_dir() and suffix not in TABLE_SUFFIXES:
        raise DataError(f"{p}: unsupported file type {p.suffix!r} (use csv, tsv, json, jsonl, parquet "
                        "or a datasets.save_to_disk folder)")
    try:
        if p.is_dir():
            return _read_saved_dataset(p)
        if suffix in (".csv", ".tsv"):
            sep = delimiter or ("\t" if suffix == ".tsv" else sniff_delimiter(p, encoding))
            return _read_csv(p, sep, encoding)
        if suffix in (".json", ".jsonl"):
            return parse_json_rows(p.read_text(encoding=encoding), str(p))
        return pd.read_parquet(p)
    except DataError:
        raise
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not valid {encoding} text ({_decode_error_place(p, encoding, e)}); "
                        "set data.encoding to the file's encoding, e.g. latin-1 or cp1252") from e
    except LookupError as e:
        raise DataError(f"data.encoding: unknown encoding {encoding!r}") from e
    except PermissionError as e:
        raise DataError(f"cannot read {p}: permission denied") from e
    except Exception as e:  # a malformed file: name it and the reason, no traceback
        raise DataError(f"cannot read {p}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


def _decode_error_place(p: Path, encoding: str, e: UnicodeDecodeError) -> str:
    """'byte 0xe9 on line 12' for the first undecodable byte of the whole file (a reader's error counts
    from the start of its chunk, not of the file)."""
    data = p.read_bytes()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as whole:
        line = data.count(b"\n", 0, whole.start) + 1
        return f"byte 0x{data[whole.start]:02x} on line {line}"
    return f"byte 0x{e.object[e.start]:02x}"


def _read_csv(p: Path, sep: str, encoding: str) -> pd.DataFrame:
    """A CSV/TSV file as string cells. Every row must have as many fields as the header (`_field_counts`); pandas
    never takes a column as the index (`index_col=False`: with one field too many in every row it would, and
    every column would shift)."""
    trailing = _field_counts(p, sep, encoding)
    import warnings
    with warnings.catch_warnings():  # trailing: pandas drops the empty last field, and says so as a ParserWarning
        warnings.simplefilter("ignore", pd.errors.ParserWarning)
        frame = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False, na_values=[""], encoding=encoding,
                            index_col=False)
    if trailing:  # (not a DataWarning: those `data` and `compare` show in their summary, this one is the reader's)
        warnings.warn(f"{p}: every row ends with one more, empty field than the header (a trailing {sep!r}, as some "
                      "spreadsheet exports write); that field is ignored", LorabenchWarning, stacklevel=3)
    return frame


def _field_counts(p: Path, sep: str, encoding: str) -> bool:
    """Check that every row of a CSV has the header's number of fields (read as pandas does: `"` quotes a field).
    Raises `DataError` naming the file and the first row that differs: a text holding the delimiter unquoted cuts
    it in two and shifts the columns after it. Returns True when every row has exactly one more field than the
    header and that field is empty in all of them (a trailing delimiter on every line: accepted)."""
    import csv
    with open(p, encoding=encoding, newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        header = next(reader, [])
        dup = sorted({c for c in header if header.count(c) > 1})
        if dup:  # pandas would rename the second one 'text.1' and train on the first
            raise DataError(f"{p}: column {dup[0]!r} appears more than once in the header")
        width, start, rows, trailing, first_bad = len(header), reader.line_num + 1, 0, True, None
        for row in reader:
            line, start = start, reader.line_num + 1
            if not row:  # a blank line: skipped, as pandas does
                continue
            rows += 1
            trailing = trailing and len(row) == width + 1 and row[-1] == ""
            if len(row) != width and first_bad is None:
                first_bad = (line, len(row))
    if first_bad is None or (trailing and rows):
        return bool(first_bad)
    line, n = first_bad
    fields = f"{n} field{'s' if n != 1 else ''}"
    if n < width:
        raise DataError(f"{p}: line {line} has {fields}, fewer than the header's {width}; every row needs a value (or "
                        f"an empty one, between delimiters) for each column")
    example = "a quoted tab" if sep == "\t" else f'"fire{sep} smoke and flames"'
    delimiter = "tab" if sep == "\t" else repr(sep)
    raise DataError(f"{p}: line {line} has {fields}, more than the header's {width}; a text holding the delimiter "
                    f"({delimiter}) must be quoted, e.g. {example}")


def _read_saved_dataset(p: Path) -> pd.DataFrame:
    import datasets
    ds = datasets.load_from_disk(str(p))
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DataError(f"{p}: a DatasetDict without a 'train' split (has {list(ds)})")
        ds = ds["train"]
    return ds.to_pandas()


def read_source(source: str, cfg: DataConfig | None = None) -> tuple[pd.DataFrame, str]:
    """Rows of `source` (read with `cfg.encoding` / `cfg.delimiter`); returns (frame, description)."""
    enc = dict(encoding=cfg.encoding, delimiter=cfg.delimiter) if cfg is not None else {}
    if source == BUNDLED:
        return read_table(bundled_path("train.csv")), f"{BUNDLED} (bundled Kaggle train.csv)"
    p = Path(source).expanduser()
    if p.exists() or p.suffix.lower() in TABLE_SUFFIXES or source.startswith((".", "/", "~")):
        return read_table(p, **enc), str(p)
    return _read_hub(source), f"hub:{source}"


def _read_hub(dataset_id: str) -> pd.DataFrame:
    import os
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise DataError(f"data.source {dataset_id!r} is neither a local file nor a folder, and the hub "
                        "is offline (HF_HUB_OFFLINE=1)")
    import datasets
    try:
        return datasets.load_dataset(dataset_id, split="train").to_pandas()
    except Exception as e:
        raise DataError(f"cannot load hub dataset {dataset_id!r}: {str(e).splitlines()[0]}") from e
