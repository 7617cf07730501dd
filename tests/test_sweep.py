import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lorabench.cli import main
from lorabench.config import ConfigError
from lorabench.config.space import to_distributions
from lorabench.recipes.sweep import load_sweep_config

STUDY_SPACE = """
    lora_alpha: {values: [16, 32, 64]}
    lora_bias: {value: none}
    lora_dropout: {distribution: uniform, min: 0, max: 0.1}
    lora_rank: {values: [4, 8, 16, 32]}
    learning_rate: {distribution: uniform, min: 1e-5, max: 2e-4}
    max_length: {value: 512}
"""


def sweep_yaml(tmp_path, *, rows=120, epochs=2, extra="", heartbeat=30):
    p = tmp_path / "sweep.yaml"
    p.write_text(f"""
name: sw
data: {{max_train_samples: {rows}, max_eval_samples: 60}}
model: {{name: tiny-llama, max_length: 48}}
train: {{epochs: {epochs}, batch_size: 16}}
sweep:
  method: bayes
  metric: {{name: eval/f1-score, goal: maximize}}
  run_cap: 6
  heartbeat_seconds: {heartbeat}
  {extra}
  parameters:{STUDY_SPACE}""")
    return p


def test_study_space_converts_to_optuna_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    cfg = load_sweep_config(Path(__file__).parents[1] / "examples" / "sweep-study.yaml", [])
    dists, fixed = to_distributions(cfg.sweep.parameters)
    assert dists == {"lora.alpha": CategoricalDistribution([16, 32, 64]),
                     "lora.dropout": FloatDistribution(0.0, 0.1),
                     "lora.r": CategoricalDistribution([4, 8, 16, 32]),
                     "train.learning_rate": FloatDistribution(1e-5, 2e-4)}
    assert fixed == {"lora.bias": "none", "model.max_length": 512}
    assert cfg.sweep.n_trials == 30 and cfg.sweep.metric.name == "eval/f1-score"
    more, _ = to_distributions({"train.weight_decay": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
                                "train.epochs": {"distribution": "int_uniform", "min": 1, "max": 3},
                                "lora.dropout": {"distribution": "q_uniform", "min": 0, "max": 0.1, "q": 0.05}})
    assert more["train.weight_decay"].log and more["train.epochs"].high == 3 and more["lora.dropout"].step == 0.05
    with pytest.raises(ConfigError, match="unknown parameter 'lora_ranks'"):
        to_distributions({"lora_ranks": {"values": [1]}})


def test_six_trial_sweep_writes_best_yaml(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_yaml(tmp_path)), "--output-dir", str(out)]) == 0
    trials = list(csv.DictReader((out / "trials.csv").open()))
    assert sum(t["state"] in ("COMPLETE", "PRUNED") for t in trials) == 6
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["lora"]["r"] in (4, 8, 16, 32) and best["lora"]["bias"] == "none"
    assert best["model"]["max_length"] == 512 and 1e-5 <= best["train"]["learning_rate"] <= 2e-4
    assert (out / "best.yaml").read_text().startswith("# lorabench train ")
    assert len(list((out / "trials").glob("*/run.json"))) == 6
    assert (out / "report.html").is_file() and (out / "plots" / "history.png").is_file()
    # best.yaml is ready to run
    assert main(["train", str(out / "best.yaml"), "--output-dir", str(tmp_path / "best-run"),
                 "--set", "train.epochs=1"]) == 0


def _states(db: Path, name="sw"):
    """The study's trial states in trial order, read-only: opening the database through optuna would create it
    (and its tables) when it does not exist yet, racing the sweep's own creation of them. A running trial whose
    worker has not yet recorded its first heartbeat or drawn its parameters reads "STARTING" (the killed-worker test
    kills a worker mid-training: what it checks is that the retry repeats the dead trial's parameters)."""
    import sqlite3
    if not db.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
            rows = c.execute("SELECT t.state, h.trial_id IS NOT NULL, "
                             "(SELECT COUNT(*) FROM trial_params p WHERE p.trial_id = t.trial_id) FROM trials t "
                             "JOIN studies s ON t.study_id = s.study_id "
                             "LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
                             "WHERE s.study_name = ? ORDER BY t.number", (name,)).fetchall()
    except sqlite3.Error:  # tables not created yet, or locked by the worker
        return []
    drawn = len(to_distributions(yaml.safe_load(STUDY_SPACE))[0])  # the parameters each trial draws
    return ["STARTING" if state == "RUNNING" and not (beating and params == drawn) else state
            for state, beating, params in rows]


@pytest.mark.multiprocess
def test_killed_worker_resumes_without_losing_or_repeating_trials(tmp_path):
    out = tmp_path / "out"
    cfg = sweep_yaml(tmp_path, rows=400, epochs=3, heartbeat=1, extra="pruner: none")
    cmd = [sys.executable, "-m", "lorabench.cli", "sweep", str(cfg), "--output-dir", str(out)]
    log = tmp_path / "sweep.log"
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    # Wait for a third trial to be running, then kill the worker in it. The worker is frozen (SIGSTOP) while its
    # trials are read, so what is read is what it is killed in: no race with the trial's end on a busy CPU.
    deadline = time.time() + 600
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended (exit {proc.returncode}) before a worker could be killed mid-trial:\n"
                        + log.read_text()[-3000:])
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the sweep never reached a third trial in 600 s:\n" + log.read_text()[-3000:])
        if _states(out / "study.db").count("COMPLETE") >= 2:
            os.killpg(proc.pid, signal.SIGSTOP)
            s = _states(out / "study.db")
            if s and s[-1] == "RUNNING":
                os.killpg(proc.pid, signal.SIGKILL)
                break
            os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.3)
    proc.wait()
    assert _states(out / "study.db")[-1] == "RUNNING"  # the dead worker's trial
    time.sleep(2.5)  # past the heartbeat grace period (2 x 1 s)
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    import optuna
    study = optuna.load_study(study_name="sw", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 6 and states.count("FAIL") == 1 and "RUNNING" not in states, (
        states, rerun.stdout[-3000:], rerun.stderr[-3000:])
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == failed.number]
    assert len(retried) == 1 and retried[0].params == failed.params and retried[0].state.name == "COMPLETE"
    runs = sorted(p.parent.name for p in (out / "trials").glob("*/run.json"))
    assert len(runs) == 6 == len(set(runs))
    assert f"sw-trial-{failed.number:04d}" not in runs


@pytest.mark.multiprocess
def test_workers_starting_together_on_a_new_storage_all_open_it(tmp_path):
    # Two workers (or machines) started at once both create the new database's tables: without a retry one of
    # them died with "table studies already exists" / "UNIQUE constraint failed: alembic_version" (optuna's
    # schema creation is not atomic). Threads meet at a barrier to start together, 5 fresh databases.
    import threading

    from lorabench.recipes.sweep import _storage, plan
    cfg = load_sweep_config(sweep_yaml(tmp_path), [])
    errors = []
    for i in range(5):
        p = plan(cfg, output_dir=str(tmp_path / f"out{i}"), storage=None, study=None, trials=None)
        barrier = threading.Barrier(3)

        def open_it():
            barrier.wait()
            try:
                _storage(p)
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)
        threads = [threading.Thread(target=open_it) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors


@pytest.mark.multiprocess
def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_and_retried(tmp_path):
    # optuna finds a running trial stale only by an old heartbeat; a worker killed between creating a trial and
    # recording its first heartbeat left it RUNNING for good, and every rerun then waited for it forever.
    import optuna

    from lorabench.recipes.sweep import _storage, plan
    cfg = load_sweep_config(sweep_yaml(tmp_path, heartbeat=1), [])
    p = plan(cfg, output_dir=str(tmp_path / "out"), storage=None, study=None, trials=None)
    study = optuna.create_study(study_name="sw", storage=_storage(p), direction="maximize")
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # RUNNING, no heartbeat: as if killed
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state.name == "RUNNING"  # within the grace period (2 x 1 s) it may still be starting
    time.sleep(2.2)
    optuna.storages.fail_stale_trials(study)
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "WAITING"], states  # failed, and queued again with the same parameters
    assert study.trials[1].params == dead.params and study.trials[1].system_attrs["failed_trial"] == dead.number


@pytest.mark.multiprocess
@pytest.mark.skipif(not os.environ.get("LORABENCH_TEST_POSTGRES"), reason="set LORABENCH_TEST_POSTGRES to a URL")
def test_two_workers_share_one_study_on_postgres(tmp_path):
    import optuna
    url = os.environ["LORABENCH_TEST_POSTGRES"]
    name = f"pg-{os.getpid()}-{int(time.time())}"
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_yaml(tmp_path)), "--output-dir", str(out), "--storage", url,
                 "--study", name, "--workers", "2", "--trials", "4"]) == 0
    study = optuna.load_study(study_name=name, storage=url)
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert 4 <= len(done) <= 5
    assert len({t.user_attrs["worker"] for t in done}) == 2
    assert len({t.number for t in done}) == len(done)


def test_sweep_whose_trials_all_fail_stops_with_a_clear_error(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["sweep", str(sweep_yaml(tmp_path)), "--output-dir", str(out), "--set", "lora.target_modules=[nope]"])
    assert code == 2
    err = capsys.readouterr().err
    assert "3 trials in a row failed" in err and "no module named 'nope'" in err and "Traceback" not in err
