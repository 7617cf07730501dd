"""Faults: kill -9 in the middle of a write, Ctrl-C, a full disk, two processes on one folder.

The promise under test (cli.main's docstring): nothing already written is lost and nothing is
left half-written, because every file and folder is built under a hidden temp name and renamed.
Killed processes are real subprocesses (`sys.executable -c`) that SIGKILL themselves at a chosen
point; the follow-up commands run in-process through `lorabench.cli.main`.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lorabench.cli import main

TRAIN_YAML = """
name: faults
data: {source: train.csv, max_train_samples: 64, max_eval_samples: 32}
model: {name: tiny-bert, max_length: 16}
lora: {r: 4}
train: {epochs: 1, batch_size: 16, learning_rate: 1.0e-3}
"""
COMPARE_YAML = """
name: faults-cmp
data: {source: train.csv}
models: [{name: tfidf-logreg}]
"""
# trains for minutes unless interrupted: 10 steps an epoch, an eval and a checkpoint every epoch
SLOW_TRAIN_YAML = """
name: slow
data: {source: train.csv, max_train_samples: 160, max_eval_samples: 40}
model: {name: tiny-llama, max_length: 16}
lora: {r: 2}
train: {epochs: 100000, max_steps: 10000000, batch_size: 16, learning_rate: 1.0e-3, logging_steps: 1000}
"""
SLOW_COMPARE_YAML = """
name: slow-cmp
data: {source: train.csv, max_train_samples: 160, max_eval_samples: 40}
model: {max_length: 16}
train: {epochs: 100000, max_steps: 10000000, batch_size: 16, learning_rate: 1.0e-3, logging_steps: 1000}
models: [{name: tiny-llama, lora: {r: 2}}]
"""

pytestmark = pytest.mark.system  # kill -9, Ctrl-C, full disks, processes racing: the OS's part


# --------------------------------------------------------------------------- helpers
def _rows(n: int, seed: int = 0) -> pd.DataFrame:
    rnd = random.Random(seed)
    pos = "fire flood storm quake smoke evacuate wildfire siren".split()
    neg = "happy sunny lovely cake music movie coffee garden".split()
    rows = []
    for i in range(n):
        t = rnd.randint(0, 1)
        rows.append({"id": i, "text": " ".join(rnd.sample(pos if t else neg, 4)) + f" {i}", "target": t})
    return pd.DataFrame(rows)


def _stderr_lines(err: str) -> list[str]:
    """lorabench's own final messages on stderr (`lorabench: error: ...`, `lorabench: interrupted ...`), warnings
    left out. Found anywhere in a line: a live tqdm bar may precede them on the same line (see
    test_final_message_starts_its_own_line_under_a_live_progress_bar)."""
    return [m.strip() for m in re.findall(r"lorabench: (?!warning:)[^\r\n]*", err)]


def _child(body: str, cwd: Path, *, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `body` in a fresh interpreter (same venv, same LORABENCH_CACHE unless `env` says otherwise)."""
    code = "import os, signal, sys\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def _main_killed_on_replace(argv: list[str], watch: Path, cond: str, cwd: Path) -> subprocess.CompletedProcess:
    """`main(argv)` in a subprocess whose os.replace SIGKILLs the process, instead of renaming, on the
    call into `watch` for which `cond` is true (`n`: how many calls into `watch` so far, this one
    included; `name`: the destination's file name)."""
    return _child(f"""
        _real_replace, _calls = os.replace, []
        def _replace(src, dst, *a, **k):
            d = os.path.abspath(os.fspath(dst))
            if d.startswith({str(watch.resolve())!r} + os.sep):
                _calls.append(d)
                n, name = len(_calls), os.path.basename(d)
                if {cond}:
                    os.kill(os.getpid(), signal.SIGKILL)
            return _real_replace(src, dst, *a, **k)
        os.replace = _replace
        from lorabench.cli import main
        sys.exit(main({argv!r}))
    """, cwd)


def _visible_files(folder: Path) -> dict[str, bytes]:
    """Every file a reader would use: none under a hidden (temp) name."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = p.read_bytes()
    return out


def _assert_whole(folder: Path) -> dict[str, bytes]:
    """Every visible file parses as what its name says; returns them."""
    files = _visible_files(folder)
    assert files, f"no files in {folder}"
    for rel, data in files.items():
        assert data, f"{rel} is empty"
        suffix = Path(rel).suffix
        if suffix == ".json":
            json.loads(data)
        elif suffix == ".csv":
            frame = pd.read_csv(folder / rel)
            assert data.endswith(b"\n") and len(frame.columns) > 0, rel
            assert len(frame) > 0 or rel.startswith("analysis/"), rel  # e.g. no row every model gets wrong: a header
        elif suffix == ".html":
            assert data.rstrip().endswith(b"</html>"), f"{rel} is cut short"
        elif suffix == ".png":
            assert data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82"), f"{rel} is cut short"
        elif suffix == ".yaml":
            yaml.safe_load(data)
        elif suffix == ".md":
            assert data.endswith(b"\n"), f"{rel} is cut short"
        elif suffix == ".safetensors":
            from safetensors.numpy import load
            load(data)
    return files


def _temp_siblings(target: Path) -> list[Path]:
    """Hidden temp folders/files lorabench builds `target` under (`.<name>-*`)."""
    return sorted(target.parent.glob(f".{target.name}-*"))


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("faults")
    _rows(200).drop(columns="id").to_csv(d / "train.csv", index=False)
    _rows(600, seed=1).drop(columns="target").to_csv(d / "new.csv", index=False)
    for name, text in (("train.yaml", TRAIN_YAML), ("compare.yaml", COMPARE_YAML), ("slow.yaml", SLOW_TRAIN_YAML),
                       ("slow-compare.yaml", SLOW_COMPARE_YAML)):
        (d / name).write_text(text)
    return d


@pytest.fixture(scope="module")
def tiny_run(work) -> Path:
    """A finished tiny-bert LoRA run folder (read-only for the tests)."""
    run = work / "tiny-run"
    assert main(["train", str(work / "train.yaml"), "--output-dir", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def comparison(work) -> Path:
    """A finished tfidf-logreg comparison folder; tests work on copies."""
    out = work / "cmp"
    assert main(["compare", str(work / "compare.yaml"), "--output-dir", str(out)]) == 0
    return out


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs: a disk that fills up."""
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield d
    finally:
        if subprocess.run(["umount", str(d)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _fill(disk: Path, leave: int) -> None:
    """Write a ballast file so that about `leave` bytes stay free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    assert free > leave + 4096
    (disk / "ballast.bin").write_bytes(b"\0" * (free - leave))


# --------------------------------------------------------------------------- 1. kill -9 during a cache build
@pytest.mark.parametrize("after", ["model weights", "tokenizer"])
def test_kill9_during_tiny_model_cache_build_leaves_no_half_model(tmp_path, monkeypatch, after):
    cache = tmp_path / "cache"
    cls = ("transformers.PreTrainedModel" if after == "model weights"
           else "transformers.tokenization_utils_base.PreTrainedTokenizerBase")
    p = _child(f"""
        import transformers, transformers.tokenization_utils_base
        _cls = {cls}
        _real_save = _cls.save_pretrained
        def _save_then_die(self, *a, **k):
            _real_save(self, *a, **k)          # the files are on disk, the folder not yet renamed
            os.kill(os.getpid(), signal.SIGKILL)
        _cls.save_pretrained = _save_then_die
        from lorabench.config import ModelConfig
        from lorabench.models import resolve_source
        resolve_source(ModelConfig(name="tiny-llama"))
        print("not killed")
    """, tmp_path, env={"LORABENCH_CACHE": str(cache)})
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stdout, p.stderr[-2000:])
    models = cache / "models"
    hidden = [d for d in models.iterdir() if d.name.startswith(".")]
    assert any((d / "config.json").is_file() for d in hidden), "the kill did not land mid-build"
    for d in models.iterdir():
        if d.name.startswith("."):
            continue  # a temp build: no reader looks there
        names = {f.name for f in d.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= names, f"half-built {d.name}: {names}"
    target = models / "tiny-llama-v1"
    assert not target.exists() or (target / "tokenizer.json").is_file()

    # the next process resolves and loads it (the cache reads LORABENCH_CACHE at each call)
    from transformers import AutoModel, AutoTokenizer

    from lorabench.config import ModelConfig
    from lorabench.models import resolve_source
    monkeypatch.setenv("LORABENCH_CACHE", str(cache))
    src = resolve_source(ModelConfig(name="tiny-llama"))
    assert Path(src.path) == target
    model = AutoModel.from_pretrained(src.path)
    tok = AutoTokenizer.from_pretrained(src.path)
    assert model.config.model_type == "llama" and len(tok("forest fire")["input_ids"]) >= 2


# --------------------------------------------------------------------------- 2. kill -9 during report
@pytest.mark.parametrize("kill_at", ["n == 2", "name == 'report.html'"])
def test_kill9_during_report_leaves_every_file_whole(comparison, work, tmp_path, kill_at):
    out = tmp_path / "cmp"
    shutil.copytree(comparison, out)
    before = _assert_whole(out)
    assert "report.html" in before and "results.json" in before

    p = _main_killed_on_replace(["report", str(out)], out, kill_at, work)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stdout, p.stderr[-2000:])

    after = _assert_whole(out)
    assert set(after) == set(before)  # nothing vanished, nothing half-named appeared
    assert after["report.html"] == before["report.html"]  # the kill came before its rename: the previous one
    json.loads(after["results.json"])
    pd.read_csv(out / "results.csv")

    assert main(["report", str(out)]) == 0
    again = _assert_whole(out)
    assert again["report.html"].rstrip().endswith(b"</html>")


# --------------------------------------------------------------------------- 3. kill -9 during predict
@pytest.mark.parametrize("previous", [False, True], ids=["no-previous-output", "previous-output"])
def test_kill9_during_predict_never_leaves_a_partial_output(tiny_run, work, tmp_path, previous, capsys):
    res = tmp_path / "res"
    res.mkdir()
    out = res / "p.csv"
    old = None
    if previous:
        assert main(["predict", str(tiny_run), "--input", str(work / "train.csv"), "--output", str(out)]) == 0
        old = out.read_bytes()
        assert len(pd.read_csv(out)) == 200

    argv = ["predict", str(tiny_run), "--input", str(work / "new.csv"), "--output", str(out)]
    p = _main_killed_on_replace(argv, res, "name == 'p.csv'", work)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stdout, p.stderr[-2000:])
    if previous:
        assert out.read_bytes() == old
    else:
        assert not out.exists()
    assert [f.name for f in res.iterdir() if not f.name.startswith(".")] == (["p.csv"] if previous else [])

    capsys.readouterr()
    assert main(argv) == 0
    got = pd.read_csv(out)
    assert len(got) == 600 and got["id"].tolist() == list(range(600))


# --------------------------------------------------------------------------- 4. kill -9 during export
@pytest.mark.parametrize("merge", [False, True], ids=["adapter", "merged"])
def test_kill9_during_export_leaves_no_half_exported_folder(tiny_run, work, tmp_path, merge):
    out = tmp_path / "exported"
    if merge:  # the merged weights are written, then the process dies
        patch = """
            import transformers
            _real = transformers.PreTrainedModel.save_pretrained
            def _die_after(self, *a, **k):
                _real(self, *a, **k)
                os.kill(os.getpid(), signal.SIGKILL)
            transformers.PreTrainedModel.save_pretrained = _die_after
        """
    else:  # the adapter is copied, then the process dies
        patch = """
            import shutil
            _real = shutil.copy2
            def _die_after(*a, **k):
                _real(*a, **k)
                os.kill(os.getpid(), signal.SIGKILL)
            shutil.copy2 = _die_after
        """
    argv = ["export", str(tiny_run), str(out)] + (["--merge"] if merge else [])
    p = _child(textwrap.dedent(patch) + f"from lorabench.cli import main\nsys.exit(main({argv!r}))\n", work)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stdout, p.stderr[-2000:])
    assert _temp_siblings(out), "the kill did not land mid-export"
    assert not out.exists()

    assert main(argv) == 0
    files = _assert_whole(out)
    assert {"README.md", "lorabench_run.json", "tokenizer.json"} <= set(files)
    if merge:
        from transformers import AutoModelForSequenceClassification
        assert AutoModelForSequenceClassification.from_pretrained(out).config.num_labels == 2
    else:
        assert {"adapter_model.safetensors", "adapter_config.json"} <= set(files)


# --------------------------------------------------------------------------- 5. Ctrl-C
def _wait_for(pred, proc: subprocess.Popen, what: str, timeout: float = 90) -> None:
    t0 = time.monotonic()
    while not pred():
        if proc.poll() is not None:
            pytest.fail(f"process ended ({proc.returncode}) before {what}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _training(run: Path) -> bool:
    """The run is mid-training: its unfinished folder's run.log has an epoch line (lorabench.training.progress)."""
    return any(" epoch 1" in (p / "run.log").read_text() for p in _temp_siblings(run) if (p / "run.log").is_file())


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child: SIGINT as a terminal delivers it. A shell starting a job in the background (`cmd &` in a
    script, as CI runners may) sets SIGINT to ignored, the child inherits that, and Python then installs no
    KeyboardInterrupt handler: the test's Ctrl-C would never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # exec keeps an ignored signal ignored, a default one default


def test_ctrl_c_during_training_exits_130_and_leaves_nothing(work, tmp_path):
    run = tmp_path / "R"
    err_file = tmp_path / "stderr.txt"
    with err_file.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "lorabench.cli", "train", str(work / "slow.yaml"),
                                 "--output-dir", str(run)], cwd=work, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=_ctrl_c_as_in_a_terminal)
    try:
        # training: its temp folder exists and an epoch has ended
        _wait_for(lambda: _training(run), proc, "training to start")
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err_file.read_text()
    assert rc == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    interrupted = [l for l in _stderr_lines(err) if l.startswith("lorabench: interrupted")]
    assert len(interrupted) == 1, err[-3000:]
    assert not run.exists()
    assert _temp_siblings(run) == []


@pytest.mark.parametrize("where", [  # the names where the pipeline calls them (it imports them by name)
    "lorabench.pipeline.run.machine",
    "lorabench.pipeline.run.build_classifier", "lorabench.pipeline.run.train", "lorabench.runs.record.write_json"])
def test_ctrl_c_at_each_stage_of_a_run_leaves_no_temp_folder(work, tmp_path, monkeypatch, capsys, where):
    """Ctrl-C (KeyboardInterrupt) at a chosen point of `lorabench train`, deterministically, in-process:
    recording the machine, building the model, training, writing run.json."""
    import importlib
    module, attr = where.rsplit(".", 1)

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(importlib.import_module(module), attr, interrupted)
    run = tmp_path / "R"
    assert main(["train", str(work / "train.yaml"), "--output-dir", str(run)]) == 130
    err = capsys.readouterr().err
    assert [l for l in _stderr_lines(err) if l.startswith("lorabench: interrupted")] == _stderr_lines(err) != []
    assert len(_stderr_lines(err)) == 1 and "Traceback" not in err
    assert not run.exists()
    assert _temp_siblings(run) == [], f"temp folder left after Ctrl-C at {where}"


@pytest.mark.parametrize("fault", ["interrupt", "disk full"])
def test_final_message_starts_its_own_line_under_a_live_progress_bar(work, tmp_path, monkeypatch, capsys, fault):
    import errno

    from tqdm.auto import tqdm

    def train_with_a_live_bar(*a, **k):
        bar = tqdm(total=100, desc="train")  # as the HF Trainer's bar while it trains
        bar.update(1)
        if fault == "interrupt":
            raise KeyboardInterrupt
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr("lorabench.pipeline.run.train", train_with_a_live_bar)  # (bound by name there)
    capsys.readouterr()
    assert main(["train", str(work / "train.yaml"), "--output-dir", str(tmp_path / "R")]) in (130, 1)
    err = capsys.readouterr().err
    assert len(_stderr_lines(err)) == 1
    starts = [seg for seg in re.split(r"[\r\n]", err) if seg.startswith(("lorabench: interrupted", "lorabench: error:"))]
    assert len(starts) == 1, repr(err[-500:])


# --------------------------------------------------------------------------- 6. full disk
def test_predict_on_a_full_disk_fails_cleanly_and_keeps_earlier_files(tiny_run, work, tmp_path, small_disk, capsys):
    keep = small_disk / "keep.csv"
    keep_bytes = b"id,label\n" + b"".join(f"{i},{i % 2}\n".encode() for i in range(3000))
    keep.write_bytes(keep_bytes)
    _fill(small_disk, leave=16 * 1024)
    big = tmp_path / "big.csv"
    _rows(2000, seed=2).drop(columns="target").to_csv(big, index=False)  # ~50 KB of predictions
    out = small_disk / "p.csv"
    capsys.readouterr()

    assert main(["predict", str(tiny_run), "--input", str(big), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = _stderr_lines(err)
    assert len(lines) == 1 and lines[0].startswith("lorabench: error:"), err[-2000:]
    assert "no space" in lines[0].lower(), lines
    assert keep.read_bytes() == keep_bytes
    assert sorted(f.name for f in small_disk.iterdir()) == ["ballast.bin", "keep.csv"]  # no p.csv, no temp file


def test_train_on_a_full_disk_fails_cleanly_and_leaves_no_folder(work, small_disk, capsys):
    keep = small_disk / "keep.csv"
    keep_bytes = b"a,b\n" + b"1,2\n" * 2000
    keep.write_bytes(keep_bytes)
    _fill(small_disk, leave=16 * 1024)  # room for a little, not for the adapter + tokenizer
    run = small_disk / "run"
    capsys.readouterr()

    rc = main(["train", str(work / "train.yaml"), "--output-dir", str(run)])
    err = capsys.readouterr().err
    assert rc != 0
    assert "Traceback" not in err, err[-3000:]
    lines = _stderr_lines(err)
    assert len(lines) == 1 and lines[0].startswith("lorabench: error:"), err[-3000:]
    assert "no space" in lines[0].lower(), lines
    assert keep.read_bytes() == keep_bytes
    assert sorted(f.name for f in small_disk.iterdir()) == ["ballast.bin", "keep.csv"]  # no run, no .run-*


# --------------------------------------------------------------------------- 7. two compares on one folder
def test_compare_refuses_a_folder_locked_by_another_compare(work, tmp_path, capsys):
    from lorabench.runs.files import folder_lock
    out = tmp_path / "cmp"
    cfg = str(work / "compare.yaml")
    with folder_lock(out):
        assert main(["compare", cfg, "--output-dir", str(out)]) == 2
        lines = _stderr_lines(capsys.readouterr().err)
        assert len(lines) == 1 and lines[0].startswith("lorabench: error:"), lines
        assert "in use by another lorabench compare" in lines[0]
        assert _visible_files(out) == {}  # the refused compare wrote nothing
    assert main(["compare", cfg, "--output-dir", str(out)]) == 0
    _assert_whole(out)
    assert (out / "tfidf-logreg-seed42" / "run.json").is_file()


def test_two_compare_processes_on_one_folder(work, tmp_path, capsys):
    out = tmp_path / "cmp"
    err_file = tmp_path / "stderr.txt"
    with err_file.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "lorabench.cli", "compare", str(work / "slow-compare.yaml"),
                                 "--output-dir", str(out)], cwd=work, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=_ctrl_c_as_in_a_terminal)
    try:
        run = out / "tiny-llama-seed42"
        _wait_for(lambda: bool(_temp_siblings(run)), proc, "the first compare to train")
        assert (out / ".lock").read_text().strip() == str(proc.pid)
        capsys.readouterr()
        assert main(["compare", str(work / "compare.yaml"), "--output-dir", str(out)]) == 2
        lines = _stderr_lines(capsys.readouterr().err)
        assert len(lines) == 1 and "in use by another lorabench compare" in lines[0], lines
        assert f"pid {proc.pid}" in lines[0]
        assert "tiny-llama" in (out / "compare.yaml").read_text()  # the refused compare did not touch it

        _wait_for(lambda: _training(run), proc, "the first compare's first epoch")
        proc.send_signal(signal.SIGINT)  # Ctrl-C the first compare mid-training
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err_file.read_text()
    assert rc == 130 and "Traceback" not in text, text[-3000:]
    assert not run.exists() and _temp_siblings(run) == []

    assert main(["compare", str(work / "compare.yaml"), "--output-dir", str(out)]) == 0
    _assert_whole(out)
    assert json.loads((out / "results.json").read_text())["models"][0]["label"] == "tfidf-logreg"


def test_atomic_writes_write_through_devices_fifos_and_symlinks(tmp_path):
    """`predict --output /dev/null` (or /dev/stdout, a FIFO) replaced the device with a regular file: a temp file
    renamed over it (as root, the machine's /dev/null became a plain file). Non-regular targets are written in
    place; a symlink keeps pointing where it did and its target gets the text."""
    import stat
    import threading

    from lorabench.runs.files import write_atomic
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    write_atomic(fifo, "a,b\n")
    reader.join(timeout=10)
    assert got == ["a,b\n"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    target = tmp_path / "real.csv"
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    write_atomic(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
