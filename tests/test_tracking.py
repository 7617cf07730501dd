"""train.report_to: each tracker really runs (offline) and is read back with its own reader.

W&B: the offline run's transaction log (.wandb, read with wandb's own protobuf records); MLflow: MlflowClient on the
SQLite store; TensorBoard: EventAccumulator; trackio: its local store (trackio.Api, SQLiteStorage).
"""
import importlib.util
import json
import logging
import os
import struct
import sys
from pathlib import Path

import pytest

from lorabench import tracking
from lorabench.cli import main
from lorabench.config import DataConfig, ExperimentConfig, LoraConfig, ModelConfig, TrainConfig
from lorabench.config.loading import to_dict
from lorabench.pipeline.run import run_experiment
from lorabench.tracking.base import metric_key

ALL = ["wandb", "mlflow", "tensorboard", "trackio"]
pytestmark = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ALL),
                                reason="the trackers (pip install -e '.[tracking]')")  # not imported: see trackio_dir


@pytest.fixture(scope="module")
def trackio_dir(tmp_path_factory):
    """trackio reads TRACKIO_DIR once, when it is imported: point it at a temporary folder before that."""
    saved = os.environ.get("TRACKIO_DIR")
    if "trackio" in sys.modules and not saved:
        pytest.skip("trackio was imported before its folder could be set; these tests would write to $HF_HOME")
    if "trackio" not in sys.modules:
        os.environ["TRACKIO_DIR"] = str(tmp_path_factory.mktemp("trackio"))
    import trackio.utils
    yield Path(trackio.utils.TRACKIO_DIR)
    if saved is None:
        os.environ.pop("TRACKIO_DIR", None)
    else:
        os.environ["TRACKIO_DIR"] = saved


@pytest.fixture(autouse=True)
def _no_tracker_env(monkeypatch, tmp_path):
    """The defaults under test: nothing configured by the environment (but W&B's service logs, which go to
    ~/.cache/wandb/logs otherwise)."""
    for k in list(os.environ):
        if k.startswith(("WANDB_", "MLFLOW_")) or k == "TENSORBOARD_LOGGING_DIR":
            monkeypatch.delenv(k)
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


def tiny_cfg(name, model="tiny-llama", report_to=ALL):
    return ExperimentConfig(
        name=name, data=DataConfig(max_train_samples=64, max_eval_samples=32),
        model=ModelConfig(name=model, max_length=32), lora=LoraConfig(r=4),
        train=TrainConfig(epochs=2, batch_size=16, learning_rate=1e-3, logging_steps=2, report_to=report_to))


# --------------------------------------------------------------------------- readers
def wandb_run(folder: Path) -> dict:
    """The one offline W&B run under `folder/wandb`: its run record, config, history rows, summary and exit code,
    from the .wandb transaction log (LevelDB-style log of wandb's protobuf `Record`s)."""
    from wandb.proto import wandb_internal_pb2 as pb
    files = list(folder.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    data, pos, buf, records = files[0].read_bytes(), 7, b"", []
    assert struct.unpack("<4sHB", data[:7])[0] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # block trailer padding
            pos += left
            continue
        buf = (b"" if kind in (1, 2) else buf) + data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            records.append(pb.Record.FromString(buf))

    def items(updates):
        return {it.key or "/".join(it.nested_key): json.loads(it.value_json) for it in updates}
    out = {"config": {}, "history": [], "summary": {}, "exit_code": None, "files": files[0].parent}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
            out["config"].update(items(r.run.config.update))
        elif kind == "config":
            out["config"].update(items(r.config.update))
        elif kind == "history":
            out["history"].append(items(r.history.item))
        elif kind == "summary":
            out["summary"].update(items(r.summary.update))
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out


def tb_events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return ea


def tb_text(ea, tag: str) -> str:
    return ea.Tensors(tag)[0].tensor_proto.string_val[0].decode()


def trackio_runs(project: str) -> dict:
    import trackio
    return {r.name: r for r in trackio.Api().runs(project)}


def trackio_logs(project: str, run: str) -> list[dict]:
    from trackio.sqlite_storage import SQLiteStorage
    return SQLiteStorage.get_logs(project, run)


def mlflow_client(db: Path):
    from mlflow.tracking import MlflowClient
    return MlflowClient(f"sqlite:///{db}")


def process_state() -> dict:
    import mlflow
    import trackio.context_vars as cv
    import wandb
    env = {k: v for k, v in os.environ.items() if k.startswith(("WANDB_", "MLFLOW_", "TENSORBOARD", "TRACKIO"))}
    return {"env": env, "mlflow_uri_set": mlflow.is_tracking_uri_set(), "mlflow_run": mlflow.active_run(),
            "wandb_run": wandb.run, "trackio": (cv.current_run.get(), cv.current_project.get()),
            "mlflow_log_level": logging.getLogger("mlflow").level}


def close(a, b, tol=1e-5):
    return abs(a - b) <= tol * max(1.0, abs(b))


# --------------------------------------------------------------------------- tests
def test_report_to_maps_onto_the_trainer_and_the_summary_flattens_the_record():
    assert tracking.trainer_report_to(ALL) == ["wandb", "mlflow"]  # tensorboard, trackio: attached by lorabench
    assert tracking.trainer_report_to("tensorboard") == "none" == tracking.trainer_report_to("none")
    numbers = tracking.summary({"metrics": {"val": {"f1": 0.5}}, "params": {"trainable": 10, "total": 100},
                                "evaluation": {"val": {"per_class": {"a": {"f1": 0.4}}, "mcc": None, "labels": ["a", "b"],
                                                       "confusion_matrix": [[1, 2], [3, 4]]}},
                                "train_seconds": 1.5, "peak_memory_mb": 700.0, "throughput": {"x": 2.0}})
    assert numbers == {"final/val/f1": 0.5, "params/trainable": 10, "params/total": 100, "final/val/class/a/f1": 0.4,
                       "final/val/confusion/a/a": 1, "final/val/confusion/a/b": 2, "final/val/confusion/b/a": 3,
                       "final/val/confusion/b/b": 4, "run/train_seconds": 1.5, "run/peak_memory_mb": 700.0,
                       "run/x": 2.0}
    assert tracking.redact_url("postgresql://u:pw@db/x?password=pw2") == "postgresql://u:***@db/x?password=***"


def test_every_tracker_gets_config_epochs_and_final_metrics_of_a_run(tmp_path, trackio_dir):
    cfg = tiny_cfg("trk-one")
    before = process_state()
    rec = run_experiment(cfg, tmp_path / "run")
    assert process_state() == before  # runs finished, MLflow URI / env / trackio project / log levels restored
    run, config = tmp_path / "run", tracking.json_safe(to_dict(cfg))
    epochs = [(h["step"], h["f1"]) for h in rec["history"]]
    assert len(epochs) == 2
    final = tracking.summary(rec)
    for key in ("final/val/f1", "final/val/class/disaster/f1", "final/val/mcc", "params/trainable", "params/total",
                "run/train_seconds", "run/pure_train_seconds", "run/peak_memory_mb", "run/steps"):
        assert key in final, key
    assert final["final/val/f1"] == rec["metrics"]["val"]["f1"]
    assert not (run / "checkpoints").exists() and set(rec["tracking"]) == set(ALL)

    wb = wandb_run(run)
    assert wb["run"].project == "lorabench" and wb["run"].display_name == "run" and wb["exit_code"] == 0
    assert all(wb["config"][k] == v for k, v in config.items())  # lorabench's resolved config
    got = [(h["train/global_step"], h["eval/f1"]) for h in wb["history"] if "eval/f1" in h]
    assert [s for s, _ in got] == [s for s, _ in epochs] and all(close(a, b) for (_, a), (_, b) in zip(got, epochs))
    assert all(close(wb["summary"][k], v) for k, v in final.items())

    client = mlflow_client(run / "mlflow.db")
    mr = client.get_run(rec["tracking"]["mlflow"]["run_id"])
    assert mr.info.status == "FINISHED" and mr.info.run_name == "run"
    flat = tracking.flatten(config)
    assert mr.data.params["train.learning_rate"] == str(flat["train.learning_rate"])
    assert mr.data.params["model.name"] == "tiny-llama" and mr.data.params["lora.r"] == "4"
    got = [(m.step, m.value) for m in client.get_metric_history(mr.info.run_id, "eval_f1")]
    assert [s for s, _ in got] == [s for s, _ in epochs] and all(close(a, b) for (_, a), (_, b) in zip(got, epochs))
    assert all(close(mr.data.metrics[metric_key(k)], v) for k, v in final.items())

    ea = tb_events(run / "tensorboard")
    assert json.loads(tb_text(ea, "lorabench/config/text_summary").strip("`\n")) == config
    got = [(e.step, e.value) for e in ea.Scalars("eval/f1")]
    assert [s for s, _ in got] == [s for s, _ in epochs] and all(close(a, b, 1e-6) for (_, a), (_, b) in zip(got, epochs))
    assert all(close(ea.Scalars(k)[-1].value, v, 1e-6) for k, v in final.items())

    tr = trackio_runs("trk-one")["run"]
    assert {k: v for k, v in tr.config.items() if not k.startswith("_")} == config
    logs = trackio_logs("trk-one", "run")
    got = [(r["step"], r["eval/f1"]) for r in logs if "eval/f1" in r]
    assert [s for s, _ in got] == [s for s, _ in epochs] and all(close(a, b) for (_, a), (_, b) in zip(got, epochs))
    last = {k: v for r in logs for k, v in r.items()}
    assert all(close(last[k], v) for k, v in final.items())


def test_a_subset_of_trackers_writes_only_theirs(tmp_path):
    cfg = tiny_cfg("trk-tb", model="tfidf-logreg", report_to="tensorboard")
    rec = run_experiment(cfg, tmp_path / "run")
    run = tmp_path / "run"
    assert set(rec["tracking"]) == {"tensorboard"} and not (run / "wandb").exists() and not (run / "mlflow.db").exists()
    ea = tb_events(run / "tensorboard")
    assert close(ea.Scalars("final/val/f1")[-1].value, rec["metrics"]["val"]["f1"], 1e-6)
    assert '"name": "tfidf-logreg"' in tb_text(ea, "lorabench/config/text_summary")


def test_a_run_redone_at_the_same_path_in_the_same_process_gets_a_fresh_mlflow_store(tmp_path):
    import shutil
    cfg = tiny_cfg("trk-again", model="tfidf-logreg", report_to="mlflow")
    ids = []
    for _ in range(2):  # MLflow caches connections per store URI; the folder holding the first store is gone
        rec = run_experiment(cfg, tmp_path / "run")
        client = mlflow_client(tmp_path / "run" / "mlflow.db")
        ids.append([r.info.run_id for r in client.search_runs([client.get_experiment_by_name("trk-again").experiment_id])])
        assert ids[-1] == [rec["tracking"]["mlflow"]["run_id"]]
        tracking.BACKENDS["mlflow"].forget_store(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")  # this reader's cache too
        shutil.rmtree(tmp_path / "run")
    assert ids[0] != ids[1]


COMPARE = """
name: trk-cmp
data: {max_train_samples: 64, max_eval_samples: 32}
model: {max_length: 32}
train: {epochs: 2, batch_size: 16, learning_rate: 1.0e-3, report_to: [wandb, mlflow, tensorboard, trackio]}
lora: {r: 4}
models:
  - name: tfidf-logreg
  - name: tiny-bert
  - name: {broken}
    label: broken
"""


def test_compare_groups_its_runs_and_logs_the_comparison_table(tmp_path, trackio_dir, broken_model):
    (tmp_path / "cmp.yaml").write_text(COMPARE.replace("{broken}", str(broken_model)))
    out = tmp_path / "out"
    assert main(["compare", str(tmp_path / "cmp.yaml"), "--output-dir", str(out)]) == 1  # the broken one failed
    runs = {"tfidf-logreg-seed42": "FINISHED", "tiny-bert-seed42": "FINISHED", "broken-seed42": "FAILED"}
    labels = {"tfidf-logreg", "tiny-bert", "broken", "Ensemble: mean of top 2"}  # + the ensemble row of the two that ran

    for name, status in runs.items():  # W&B: one group
        wb = wandb_run(out / name)
        assert (wb["run"].run_group, wb["run"].job_type, wb["exit_code"]) == ("trk-cmp", "train", status == "FAILED")
        assert ("SafetensorError" in wb["summary"].get("error", "")) == (status == "FAILED")
    wb = wandb_run(out)
    assert (wb["run"].run_group, wb["run"].job_type, wb["run"].display_name) == ("trk-cmp", "compare", "trk-cmp-compare")
    assert any(h.get("compare/_type") == "table-file" and h.get("compare/nrows") == 4 for h in wb["history"])
    table = json.loads(next(wb["files"].glob("files/media/table/compare_*.table.json")).read_text())
    assert {row[table["columns"].index("label")] for row in table["data"]} == labels

    client = mlflow_client(out / "mlflow.db")  # MLflow: a parent run, the runs as its children
    exp = client.get_experiment_by_name("trk-cmp")
    every = client.search_runs([exp.experiment_id])
    parent = next(r for r in every if r.info.run_name == "trk-cmp-compare")
    children = {r.info.run_name: r.info.status for r in every if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert children == runs and parent.info.status == "FINISHED"
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "compare.json", str(tmp_path))).read_text())
    assert {row[table["columns"].index("label")] for row in table["data"]} == labels

    assert "tiny-bert" in tb_text(tb_events(out / "tensorboard"), "compare/table/text_summary")  # TensorBoard
    assert tb_events(out / "tiny-bert-seed42" / "tensorboard").Scalars("eval/f1")
    assert (out / "broken-seed42" / "tensorboard").is_dir()  # a failed run keeps its tracker data

    found = trackio_runs("trk-cmp")  # trackio: one project
    assert set(found) == set(runs) | {"trk-cmp-compare"}
    assert {r.config["_Group"] for r in found.values()} == {"trk-cmp"}
    assert [r["run/failed"] for r in trackio_logs("trk-cmp", "broken-seed42")] == [1]
    logged = [r["compare"] for r in trackio_logs("trk-cmp", "trk-cmp-compare") if "compare" in r]
    assert logged and logged[0]["_type"] == "trackio.table"


SWEEP = """
name: trk-sw
data: {max_train_samples: 64, max_eval_samples: 32}
model: {name: tiny-llama, max_length: 32}
train: {epochs: 2, batch_size: 16, report_to: [wandb, mlflow, tensorboard, trackio]}
sweep:
  method: grid
  pruner: none
  metric: {name: eval/f1-score, goal: maximize}
  parameters:
    lora_rank: {values: [2, 4]}
    learning_rate: {value: 0.001}
"""


def test_sweep_logs_each_trial_and_the_best_and_no_secret_is_written_anywhere(tmp_path, trackio_dir, monkeypatch):
    api_key, password = "local-" + "0123456789abcdef" * 2 + "feedf00d", "S3cr3tStoragePassw0rd"
    monkeypatch.setenv("WANDB_API_KEY", api_key)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password + "-mlflow")
    storage = f"sqlite:///file:{tmp_path / 'study.db'}?mode=rwc&password={password}&uri=true"
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    out = tmp_path / "out"
    argv = ["sweep", str(tmp_path / "sweep.yaml"), "--output-dir", str(out), "--storage", storage, "--trials", "2"]
    monkeypatch.setattr(sys, "argv", ["lorabench"] + argv)  # the command line, as W&B's metadata would see it
    assert main(argv) == 0
    best = json.loads((out / "sweep_summary.json").read_text())["best"]
    trials = sorted(p.name for p in (out / "trials").iterdir() if not p.name.startswith("."))
    assert len(trials) == 2

    for name in trials:
        wb = wandb_run(out / "trials" / name)
        assert (wb["run"].run_group, wb["run"].job_type) == ("trk-sw", "trial")
    wb = wandb_run(out)
    assert (wb["run"].run_group, wb["run"].job_type) == ("trk-sw", "sweep")
    assert wb["summary"]["best/value"] == best["value"] and wb["config"]["best_params"] == best["params"]

    client = mlflow_client(out / "mlflow.db")
    every = client.search_runs([client.get_experiment_by_name("trk-sw").experiment_id])
    parent = next(r for r in every if r.info.run_name == "trk-sw-sweep")
    assert sorted(r.info.run_name for r in every if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id) == trials
    assert parent.data.metrics["best/value"] == best["value"] and parent.data.params["best.lora.r"] == str(best["params"]["lora.r"])

    ea = tb_events(out / "tensorboard")
    assert ea.Scalars("sweep/best/value")[0].value == pytest.approx(best["value"])
    assert json.loads(tb_text(ea, "sweep/best_params/text_summary").strip("`\n")) == best["params"]
    assert set(trackio_runs("trk-sw")) == set(trials) | {"trk-sw-sweep"}

    # no secret in any file lorabench or a tracker wrote: run folders, tracker stores, reports
    leaks = [str(p) for folder in (tmp_path, trackio_dir) for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
             and any(s in p.read_bytes() for s in (api_key.encode(), password.encode()))]
    assert leaks == []
