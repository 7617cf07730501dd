"""Training that survives kill -9: the same command resumes from the last complete checkpoint and
finishes with exactly the metrics of an uninterrupted run (issue 13)."""
import json
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from lorabench.cli import main

CONFIG = """name: rs
data: {source: train.csv, val: val.csv}
model: {name: tiny-llama, max_length: 64}
train: {epochs: 3, batch_size: 16, learning_rate: 0.02, logging_steps: 5}
"""

# Runs `lorabench train` in a child process that SIGKILLs itself at a chosen checkpoint write:
# after the resume file of checkpoint N is written ("after"), or before it ("before": checkpoint N is then
# incomplete, as when the machine dies during the write).
KILLER = """
import os, signal, sys
import lorabench.runs.files as records
from lorabench.cli import main
when, n = sys.argv[1], int(sys.argv[2])
orig, seen = records.write_json, []
def write_json(path, obj):
    if path.name == "lorabench_resume.json":
        seen.append(path)
        if len(seen) == n and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        out = orig(path, obj)
        if len(seen) == n and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return orig(path, obj)
records.write_json = write_json
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture
def work(tmp_path):
    rng = np.random.default_rng(0)
    pos, neg = "fire blaze flames smoke burning".split(), "happy good summer music fun".split()
    for name, n in (("train.csv", 160), ("val.csv", 60)):
        y = rng.integers(0, 2, n)
        texts = [" ".join(rng.choice(pos if t else neg, int(rng.integers(2, 8)))) for t in y]
        pd.DataFrame({"text": texts, "target": y}).to_csv(tmp_path / name, index=False)
    (tmp_path / "c.yaml").write_text(CONFIG)
    return tmp_path


@pytest.fixture
def uninterrupted(work):
    assert main(["train", str(work / "c.yaml"), "--output-dir", str(work / "full")]) == 0
    return json.loads((work / "full" / "run.json").read_text())


def killed_run(work, when, n, out="R", extra=()):
    p = subprocess.run([sys.executable, "-c", KILLER, when, str(n), "train", str(work / "c.yaml"),
                        "--output-dir", str(work / out), *extra], cwd=work, capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert not (work / out).exists() and (work / f".{out}-partial").is_dir()


@pytest.mark.system
@pytest.mark.parametrize("when,n,resumed", [("after", 1, 1.0), ("after", 2, 2.0), ("before", 2, 1.0)])
def test_kill9_then_the_same_command_resumes_to_the_same_result(work, uninterrupted, when, n, resumed):
    killed_run(work, when, n)
    assert main(["train", str(work / "c.yaml"), "--output-dir", str(work / "R")]) == 0
    rec = json.loads((work / "R" / "run.json").read_text())
    assert rec["resumed_from"] == resumed
    assert uninterrupted["resumed_from"] is None
    assert rec["metrics"] == uninterrupted["metrics"]
    assert [h["f1"] for h in rec["history"]] == [h["f1"] for h in uninterrupted["history"]]
    a, b = (load_file(str(work / d / "adapter_model.safetensors")) for d in ("full", "R"))
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-6
    assert not (work / ".R-partial").exists() and not (work / "R" / "checkpoints").exists()
    # a finished run folder is still refused
    assert main(["train", str(work / "c.yaml"), "--output-dir", str(work / "R")]) == 2


def test_an_unfinished_run_of_another_config_is_a_one_line_error(work, capsys):
    killed_run(work, "after", 1)
    assert main(["train", str(work / "c.yaml"), "--output-dir", str(work / "R"),
                 "--set", "train.learning_rate=0.01"]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("lorabench: warning")]
    assert len(err) == 1 and "train.learning_rate" in err[0] and "0.02" in err[0], err
    assert (work / ".R-partial" / "checkpoints").is_dir()  # nothing lost: the right config still resumes
    assert main(["train", str(work / "c.yaml"), "--output-dir", str(work / "R")]) == 0


@pytest.mark.system
def test_compare_resumes_an_interrupted_model(work):
    (work / "cmp.yaml").write_text(CONFIG.replace("model: {name: tiny-llama, max_length: 64}\n",
                                                  "model: {max_length: 64}\nmodels: [{name: tiny-llama}]\n"))
    p = subprocess.run([sys.executable, "-c", KILLER, "after", "1", "compare", str(work / "cmp.yaml"),
                        "--output-dir", str(work / "cmp")], cwd=work, capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert main(["compare", str(work / "cmp.yaml"), "--output-dir", str(work / "cmp")]) == 0
    rec = json.loads((work / "cmp" / "tiny-llama-seed42" / "run.json").read_text())
    assert rec["resumed_from"] == 1.0 and rec["status"] == "completed"


@pytest.mark.system
def test_resumed_runs_report_the_time_of_all_their_processes(work):
    killed_run(work, "after", 2)
    saved = json.loads(max((work / ".R-partial" / "checkpoints").glob("checkpoint-*/lorabench_resume.json"),
                           key=lambda p: int(p.parent.name.split("-")[1])).read_text())
    assert saved["epoch"] == 2.0 and saved["pure_train_seconds"] > 0
    assert main(["train", str(work / "c.yaml"), "--output-dir", str(work / "R")]) == 0
    rec = json.loads((work / "R" / "run.json").read_text())
    # the 2 epochs before the kill count: the record is not the resumed process's third epoch alone
    assert rec["pure_train_seconds"] > saved["pure_train_seconds"]
    assert rec["train_seconds"] > saved["train_seconds"]
    seen = 3 * 160  # 3 epochs of 160 rows
    assert rec["throughput"]["train_samples_per_second"] == pytest.approx(seen / rec["pure_train_seconds"], rel=0.1)  # run.json rounds seconds to 0.01


def test_train_refuses_to_resume_on_changed_data(work, capsys):
    killed_run(work, "after", 1)
    df = pd.read_csv(work / "train.csv")
    df["target"] = 1 - df["target"]
    df.to_csv(work / "train.csv", index=False)
    assert main(["train", str(work / "c.yaml"), "--output-dir", str(work / "R")]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("lorabench: warning")]
    assert len(err) == 1 and "other data" in err[0], err


@pytest.mark.system
def test_compare_sets_aside_an_unfinished_run_of_an_older_config(work, capsys):
    (work / "cmp.yaml").write_text(CONFIG.replace("model: {name: tiny-llama, max_length: 64}\n",
                                                  "model: {max_length: 64}\nmodels: [{name: tiny-llama}]\n"))
    p = subprocess.run([sys.executable, "-c", KILLER, "after", "1", "compare", str(work / "cmp.yaml"),
                        "--output-dir", str(work / "cmp")], cwd=work, capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert main(["compare", str(work / "cmp.yaml"), "--output-dir", str(work / "cmp"),
                 "--set", "train.learning_rate=0.01"]) == 0
    assert "was kept as tiny-llama-seed42.unfinished-config-changed-" in capsys.readouterr().out
    rec = json.loads((work / "cmp" / "tiny-llama-seed42" / "run.json").read_text())
    assert rec["status"] == "completed" and rec["resumed_from"] is None
    assert rec["config"]["train"]["learning_rate"] == 0.01
    kept = list((work / "cmp").glob("tiny-llama-seed42.unfinished-config-changed-*"))
    assert len(kept) == 1 and (kept[0] / "checkpoints").is_dir()


# ----------------------------------------------------------------------------- issue 22: callback state
def adapters_equal(a, b) -> bool:
    x, y = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


@pytest.mark.system
@pytest.mark.parametrize("metric", ["loss", "f1"])
def test_a_resumed_run_stops_after_the_same_epoch_as_an_uninterrupted_one(work, metric):
    """Early stopping's patience counter lives in its callback: a run killed one epoch after its best one, then
    resumed, must stop after the same epoch (it trained one epoch more: the counter restarted at 0)."""
    args = ["--set", "train.early_stopping_patience=2", "--set", "train.epochs=12",
            "--set", f"train.metric_for_best_model={metric}"]
    assert main(["train", str(work / "c.yaml"), "--output-dir", str(work / "full"), *args]) == 0
    full = json.loads((work / "full" / "run.json").read_text())
    stopped, best = full["epochs_run"], int(full["best_epoch"])
    assert stopped == best + 2 < 12, (stopped, best)  # early stopping ended it, two epochs after its best
    killed_run(work, "after", best + 1, extra=args)  # one epoch without improvement counted, then kill -9
    assert main(["train", str(work / "c.yaml"), "--output-dir", str(work / "R"), *args]) == 0
    resumed = json.loads((work / "R" / "run.json").read_text())
    assert resumed["resumed_from"] == best + 1
    assert (resumed["epochs_run"], resumed["best_epoch"]) == (stopped, full["best_epoch"])
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert adapters_equal(work / "full", work / "R")


STATEFUL = """
import json, os, signal, sys
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
import lorabench.runs.files as records

class StopAfterEvaluations(TrainerCallback, ExportableState):
    # decides what happens next from what it counted: stops training after `n` evaluations
    def __init__(self, n=3):
        self.n, self.seen = n, 0
    def on_evaluate(self, args, state, control, **kw):
        self.seen += 1
        if self.seen >= self.n:
            control.should_training_stop = True
    def state(self):
        return {"args": {"n": self.n}, "attributes": {"seen": self.seen}}

kill_at, out = int(sys.argv[1]), sys.argv[2]
orig, seen = records.write_json, []
def write_json(path, obj):
    result = orig(path, obj)
    if path.name == "lorabench_resume.json":
        seen.append(path)
        if len(seen) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return result
records.write_json = write_json  # before the pipeline is imported: the trainer binds write_json by name
from lorabench.config import ExperimentConfig, load_config
from lorabench.pipeline.run import run_experiment
rec = run_experiment(load_config(ExperimentConfig, "c.yaml", ["train.epochs=6"]), out,
                     callbacks=[StopAfterEvaluations(3)])
print(json.dumps({"epochs_run": rec["epochs_run"]}))
"""


@pytest.mark.system
def test_any_stateful_callback_is_resumed_with_its_state(work):
    """The kind, not only early stopping: a callback of the caller's that keeps state (transformers'
    ExportableState) gets it back on resume, so it decides as it would have without the kill."""
    def run(kill_at, out):
        return subprocess.run([sys.executable, "-c", STATEFUL, str(kill_at), out], cwd=work, capture_output=True,
                              text=True)
    full = run(0, "full")
    assert full.returncode == 0 and json.loads(full.stdout.splitlines()[-1])["epochs_run"] == 3, full.stderr[-2000:]
    assert run(2, "R").returncode == -signal.SIGKILL
    again = run(0, "R")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout.splitlines()[-1])["epochs_run"] == 3  # not 2 + 3 = 5
