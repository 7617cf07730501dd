"""One typed run record (issue 23): `RunRecord` writes run.json and reads it back field for field; a record of any
older schema is read through `migrate`; a run's run.json holds exactly the record's fields."""
import dataclasses
import json
from pathlib import Path

import pytest

from lorabench.runs.record import SCHEMA_HISTORY, SCHEMA_VERSION, RunRecord, RunStatus, migrate

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {f.name for f in dataclasses.fields(RunRecord)} - {"extra"}


def test_a_run_writes_exactly_the_records_fields_and_reads_them_back(tmp_path, tiny_config):
    from lorabench.cli import main
    assert main(["train", str(tiny_config("tiny-bert")), "--output-dir", str(tmp_path / "run")]) == 0
    raw = json.loads((tmp_path / "run" / "run.json").read_text())
    assert set(raw) == FIELDS and raw["schema_version"] == SCHEMA_VERSION
    rec = RunRecord.read(tmp_path / "run")
    assert rec.extra == {} and rec.to_dict() == raw  # nothing read into `extra`, nothing lost on the way back
    assert rec.precision["device"] == "cpu" and rec.parallel["world_size"] == 1 and rec.batch["batch_size"] == 16
    assert rec.versions["torch"] and rec.machine and rec.quantization == "none"
    rec.write(tmp_path / "again")  # the writer is the reader's type: the same file
    assert json.loads((tmp_path / "again" / "run.json").read_text()) == raw


@pytest.mark.parametrize("version", sorted(SCHEMA_HISTORY))
def test_records_of_every_older_schema_read_through_one_migration(version):
    old = {"status": "completed", "name": "n", "label": "l", "model": {"name": "tiny-bert", "kind": "transformer"},
           "data": {}, "config": {}, "metrics": {"val": {"f1": 0.5}}}
    if version > 1:
        old["schema_version"] = version
    rec = RunRecord.from_dict(old)
    assert rec.schema_version == SCHEMA_VERSION and rec.status is RunStatus.COMPLETED and rec.val == {"f1": 0.5}
    assert rec.extra == {} and rec.evaluation == {} and rec.predictions is None and rec.resumed_from is None
    assert migrate(old)["schema_version"] == SCHEMA_VERSION and "schema_version" not in old or version > 1


def test_keys_of_a_newer_lorabench_are_kept():
    rec = RunRecord.from_dict({"status": "completed", "name": "n", "label": "l", "model": {}, "data": {}, "config": {},
                               "something_new": {"a": 1}})
    assert rec.extra == {"something_new": {"a": 1}} and rec.to_dict()["something_new"] == {"a": 1}


def test_the_schema_history_is_documented():
    text = (ROOT / "docs" / "run-record.md").read_text()
    for version, change in SCHEMA_HISTORY.items():
        assert f"| {version} | {change} |" in text, version
    for name in FIELDS:
        assert f"`{name}`" in text, name
