"""The console shows lorabench's lines only (issue 21): what libraries print, log and warn during a command is
kept off the terminal (shown with -v) and kept in the run's log file; config mistakes are found before torch and
transformers are imported; tracker settings in the environment that would fail a run are one line up front."""
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import warnings

import pytest

from lorabench.cli import main

TINY = ("name: t\ndata: {max_train_samples: 64, max_eval_samples: 32}\nmodel: {name: tiny-bert, max_length: 32}\n"
        "train: {epochs: 2, batch_size: 16}\n")  # 4 steps an epoch, logging_steps 50: the epoch's loss is logged anyway


def chatter(tag: str) -> None:
    """What a chatty library does: a logger with its own handler on stderr that does not propagate, a logger that
    propagates to the root, a warning, a print, a raw write and a progress-bar redraw."""
    own = logging.getLogger(f"chattylib.{tag}")
    if not own.handlers:
        own.addHandler(logging.StreamHandler())  # bound to sys.stderr as it is now
        own.propagate = False
    own.warning("%s: own-handler noise", tag)
    logging.getLogger(f"otherlib.{tag}").warning("%s: root-logger noise", tag)
    chatter.calls = getattr(chatter, "calls", 0) + 1  # a new text each time: Python shows a warning once per text
    warnings.warn(f"{tag}: warning noise {chatter.calls}", RuntimeWarning, stacklevel=1)  # (tests ignore UserWarning)
    print(f"{tag}: print noise")
    sys.stderr.write(f"{tag}: raw noise\r{tag}: raw noise 100%\n")


NOISE = ("own-handler noise", "root-logger noise", "warning noise", "print noise", "raw noise")


@pytest.fixture
def noisy_before():
    """A library logger created before the command (as at import time), its handler bound to the stderr of that
    moment: the test's, which the command then runs under (pytest swaps stderr between setup and call)."""
    lg = logging.getLogger("chattylib.early")
    lg.propagate = False
    yield lg
    lg.handlers.clear()


def bind(lg: logging.Logger) -> None:
    lg.handlers.clear()
    lg.addHandler(logging.StreamHandler(sys.stderr))


def lines(captured) -> list[str]:
    return [x for x in (captured.out + captured.err).splitlines() if x.strip()]


def test_a_config_error_while_libraries_chatter_prints_exactly_one_line(tmp_path, monkeypatch, capsys, noisy_before):
    import lorabench.config.loading as loading
    real = loading.read_yaml

    def chatty_read(path):
        chatter("config")
        noisy_before.warning("early logger noise")
        return real(path)
    monkeypatch.setattr(loading, "read_yaml", chatty_read)
    bind(noisy_before)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {epochs: zero}\n")
    assert main(["train", str(cfg)]) == 2
    assert lines(capsys.readouterr()) == ["lorabench: error: train.epochs: expected a number, got 'zero'"]
    assert main(["-v", "train", str(cfg)]) == 2  # -v shows the libraries too
    shown = "\n".join(lines(capsys.readouterr()))
    assert all(n in shown for n in NOISE + ("early logger noise",)), shown
    assert shown.splitlines()[-1].startswith("lorabench: error: train.epochs")
    assert logging.getLogger("chattylib.early").handlers[0].stream is not None  # restored, still usable


def test_a_training_run_shows_its_own_lines_and_keeps_the_rest_in_run_log(tmp_path, monkeypatch, capsys):
    import lorabench.training.trainer as trainer
    real = trainer.tokenize

    def chatty_tokenize(*a, **k):
        chatter("train")
        return real(*a, **k)
    monkeypatch.setattr(trainer, "tokenize", chatty_tokenize)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY)
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "run")]) == 0
    shown = lines(capsys.readouterr())
    assert [x for x in shown if re.fullmatch(r"  tiny-bert epoch \d/2: train loss [\d.]+, val f1 [\d.]+, val loss [\d.]+, "
                                             r"\d+ s", x)] == shown[:2], shown
    assert len(shown) == 4 and shown[3].startswith("tiny-bert: val F1"), shown
    assert re.fullmatch(r"  tiny-bert: predicts \d+ rows/s, [\d.]+ ms for one row, .*", shown[2]), shown  # serving cost
    log = (tmp_path / "run" / "run.log").read_text()
    assert all(n in log for n in NOISE), log
    assert "train: raw noise 100%" in log and "train: raw noise\r" not in log  # a redraw keeps its last state
    assert '"loss"' in log  # the Trainer's logged numbers are kept there, not printed
    assert shown[0] in log and shown[1] in log  # and lorabench's own lines of the run too


def test_library_code_leaves_the_callers_streams_and_handlers_as_they_were(tmp_path, noisy_before):
    from lorabench import console
    bind(noisy_before)
    out, err, root_handlers = sys.stdout, sys.stderr, list(logging.getLogger().handlers)
    stream = noisy_before.handlers[0].stream
    showwarning = warnings.showwarning
    with console.capture():
        assert sys.stderr is not err and noisy_before.handlers[0].stream is not stream
        with console.log_to(tmp_path / "x.log", "x"):
            chatter("lib")
    assert (sys.stdout, sys.stderr) == (out, err) and logging.getLogger().handlers == root_handlers
    assert noisy_before.handlers[0].stream is stream and warnings.showwarning is showwarning
    assert all(n in (tmp_path / "x.log").read_text() for n in NOISE)


CHECK_IMPORTS = ("import sys\nfrom lorabench.cli import main\nrc = main(sys.argv[1:])\n"
                 "print('IMPORTED', rc, sorted(m for m in ('torch', 'transformers', 'peft', 'datasets') "
                 "if m in sys.modules))\n")


@pytest.mark.parametrize("argv, files", [
    (["train", "c.yaml"], {"c.yaml": "train: {epochs: zero}\n"}),
    (["train", "c.yaml"], {"c.yaml": "data: {source: missing.csv}\n"}),
    (["compare", "c.yaml"], {"c.yaml": "models: [{name: tiny-bert, train: {batch_size: 0}}]\n"}),
    (["sweep", "c.yaml"], {"c.yaml": "sweep: {parameters: {lora_r: {values: [2, 4]}}}\ntrain: {lr_scheduler: nope}\n"}),
    (["train", "c.yaml"], {"c.yaml": "model: {name: tiny-bert}\ntrain: {report_to: neptune}\n"}),
], ids=["bad value", "missing data file", "compare entry", "sweep", "unsupported tracker"])
def test_config_and_input_mistakes_are_found_before_torch_is_imported(tmp_path, argv, files):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    r = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, *argv], capture_output=True, text=True, cwd=tmp_path)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("lorabench: error: "), r.stderr
    assert "IMPORTED 2 []" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("env, named", [
    ({"MLFLOW_TRACKING_URI": "file:///{tmp}/mlruns"}, "MLFLOW_TRACKING_URI=file:///"),
    ({"MLFLOW_TRACKING_URI": "{tmp}/mlruns"}, "MLFLOW_TRACKING_URI="),
    ({"WANDB_MODE": "offfline"}, "WANDB_MODE=offfline"),
    ({"WANDB_DIR": "{tmp}/afile"}, "WANDB_DIR="),
    ({"TENSORBOARD_LOGGING_DIR": "{tmp}/afile/sub"}, "TENSORBOARD_LOGGING_DIR="),
    ({"TRACKIO_DIR": "{tmp}/afile"}, "TRACKIO_DIR="),
], ids=["mlflow file URI", "mlflow path", "wandb mode", "wandb dir", "tensorboard dir", "trackio dir"])
def test_tracker_environment_mistakes_are_one_line_before_training(tmp_path, monkeypatch, capsys, env, named):
    tracker = {"MLFLOW": "mlflow", "WANDB": "wandb", "TENSORBOARD": "tensorboard", "TRACKIO": "trackio"}[
        next(iter(env)).split("_")[0]]
    if importlib.util.find_spec(tracker) is None:  # (not imported: trackio reads its folder once, at import)
        pytest.skip(f"{tracker} is not installed")
    from lorabench import tracking
    if tracker == "mlflow" and not tracking.BACKENDS["mlflow"].refuses_file_store():
        pytest.skip("this MLflow still writes file stores: nothing to refuse")
    (tmp_path / "afile").write_text("x")
    for k, v in env.items():
        monkeypatch.setenv(k, v.format(tmp=tmp_path))
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY.replace("batch_size: 16}", f"batch_size: 16, report_to: [{tracker}]}}"))
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "run")]) == 2
    shown = lines(capsys.readouterr())
    assert len(shown) == 1 and shown[0].startswith(f"lorabench: error: {named}"), shown
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run*"))


def test_mlflow_file_store_is_accepted_when_the_user_allows_it(monkeypatch):
    pytest.importorskip("mlflow")
    from lorabench import tracking
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///tmp/x")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    tracking.check_environment(["mlflow"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/x.db")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    tracking.check_environment(["mlflow"])
    tracking.check_environment(["wandb"])  # MLflow's variable is not wandb's business


# every line a comparison prints, by lorabench's own formats
OWN = [r"data: .*", r"  (rows|classes|class weights|missing values|length in|tokens|positive label|duplicate texts|note|"
       r"warning)\b.*", r"\[\d/\d\] .*: (training .* \.\.\.|val F1 .*)", r"  .* epoch \d+/\d+: .*, \d+ s",
       r"ensemble: .*", r"compare: \d+ runs in \d+ s \(report with statistics [\d.]+ s\)", r"report: .*",
       r"lorabench: converting .*", r"  .*: predicts \d+ rows/s, [\d.]+ ms for one row, peak memory \d+ MB.*",
       r"verdict: .*"]


@pytest.mark.system
def test_a_comparison_prints_no_line_lorabench_did_not_write(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "name: c\ndata: {max_train_samples: 64, max_eval_samples: 32}\nmodel: {max_length: 32}\n"
        "train: {epochs: 1, batch_size: 16}\n"
        "models: [{name: tfidf-logreg}, {name: tiny-bert}, {name: tiny-llama, model: {quantization: 4bit}}]\n")
    r = subprocess.run([sys.executable, "-m", "lorabench.cli", "compare", "c.yaml"], capture_output=True, text=True,
                       cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    printed = [x for x in (r.stdout + r.stderr).splitlines() if x.strip()]
    foreign = [x for x in printed if not any(re.fullmatch(p, x) for p in OWN)]
    assert foreign == [] and len(printed) >= 10, printed
    log = (tmp_path / "runs" / "c" / "compare.log").read_text()
    assert "LOAD REPORT" in log or "newly initialized" in log  # the libraries' lines are kept, not lost
    assert json.loads((tmp_path / "runs" / "c" / "results.json").read_text())["models"]
