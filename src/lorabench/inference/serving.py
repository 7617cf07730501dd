"""Serving cost: what predicting with a finished run (or an ensemble) costs once it is chosen.

Measured the way `lorabench predict` runs it, in a fresh process (`in_fresh_process`, `python -m
lorabench.inference.serving`), so that its memory is that of a process that only predicts:

- `rows_per_second`: after one untimed warm-up batch, `BULK_PASSES` `predict_probs` passes over up to
  `SERVING_ROWS` val rows, batched and length-sorted as predict does (batch 64); rows / the fastest pass's seconds
  (the slower passes measure what else the machine was doing; all are in `passes_seconds`);
- `latency_ms`: the median wall time of `LATENCY_CALLS` calls with one row each (after `WARMUP_CALLS` untimed
  ones), rows taken in turn from the same val rows;
- `peak_memory_mb`: on CPU the process's peak resident set from before the model is loaded to the end of the
  predictions (imports of torch and transformers included: what a serving process holds); on CUDA the
  largest allocation on a GPU;
- `export_mb`: the size on disk of what `lorabench export --merge` writes (measured by writing it to a temporary
  folder, then deleted); the TF-IDF baseline's weights files (it has no transformers export); an ensemble's is the
  sum of its members' (each a separate export);
- `load_seconds`: loading the model (and its tokenizer) from the run folder;
- `measure_seconds`: the wall time of the whole measurement (the fresh process included): what it adds to a run.

An ensemble loads all its member runs once (a server keeps them loaded) and predicts with each in turn.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lorabench.errors import LorabenchError
from lorabench.inference.export import export_run
from lorabench.inference.predict import load_run, predict_probs
from lorabench.quiet import quiet
from lorabench.runs.ensemble import ensemble_probs, is_ensemble, read_ensemble
from lorabench.runs.files import read_run, write_atomic
from lorabench.runs.layout import now
from lorabench.runs.resources import PeakMemory
from lorabench.training.baseline import VOCAB_FILE, WEIGHTS_FILE

SERVING_ROWS = 128       # rows/s is measured on at most this many val rows (a sample: the cost grows with it)
BULK_PASSES = 2          # timed passes over them; the fastest counts (timeit's rule: slower passes measure others' load)
LATENCY_CALLS = 20       # single-row calls timed for the median latency
WARMUP_CALLS = 3         # untimed single-row calls before them
BATCH_SIZE = 64          # predict's default batch
TIMEOUT_SECONDS = 1800   # a measurement that takes longer is recorded as failed


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def export_size_mb(run_dir: Path) -> float:
    """MB that `lorabench export --merge` writes for this run (written to a temporary folder beside nothing of the
    user's, then deleted); the TF-IDF baseline: its two weights files."""
    rec = read_run(run_dir) or {}
    if rec.get("model", {}).get("kind") == "tfidf-logreg":
        return sum((run_dir / f).stat().st_size for f in (WEIGHTS_FILE, VOCAB_FILE)) / 2**20
    with tempfile.TemporaryDirectory(prefix="lorabench-export-size-") as tmp:
        return _folder_mb(export_run(run_dir, Path(tmp) / "merged", merge=True))


def measure(path: str | Path, texts: list[str], *, rows: int = SERVING_ROWS, latency_calls: int = LATENCY_CALLS,
            export: bool = True) -> dict:
    """Measure the serving cost of the run or ensemble folder `path` on `texts` (val texts, built as the run
    built its rows) in this process. Returns {rows_per_second, latency_ms, latency_calls, rows, load_seconds,
    peak_memory_mb, memory_kind, export_mb (None without `export`), device, measured_at, how}. Raises
    `LorabenchError` for a folder that is not a finished run or ensemble, or no texts."""
    path = Path(path)
    texts = list(texts)[:rows]
    if not texts:
        raise LorabenchError("serving cost: no rows to predict")
    with PeakMemory() as peak:
        t0 = time.perf_counter()
        if is_ensemble(path):
            spec = read_ensemble(path)
            loaded = {d.resolve(): load_run(d) for d in spec.run_dirs}

            def probs(batch: list[str]):
                return ensemble_probs(spec, lambda d: predict_probs(loaded[Path(d).resolve()], batch,
                                                                   batch_size=BATCH_SIZE, progress=False))
            device = sorted({r.device for r in loaded.values()})
        else:
            run = load_run(path)

            def probs(batch: list[str]):
                return predict_probs(run, batch, batch_size=BATCH_SIZE, progress=False)
            device = [run.device]
        load_seconds = time.perf_counter() - t0
        probs(texts[:BATCH_SIZE])  # warm-up: the first call's one-off costs are in load_seconds' spirit, not rows/s
        passes = []
        for _ in range(BULK_PASSES):
            t0 = time.perf_counter()
            probs(texts)
            passes.append(time.perf_counter() - t0)
        bulk = min(passes)
        for i in range(WARMUP_CALLS):
            probs([texts[i % len(texts)]])
        times = []
        for i in range(latency_calls):
            t0 = time.perf_counter()
            probs([texts[i % len(texts)]])
            times.append(time.perf_counter() - t0)
    out = {"rows_per_second": round(len(texts) / bulk, 2), "passes_seconds": [round(x, 4) for x in passes],
           "latency_ms": round(statistics.median(times) * 1000, 3),
           "latency_calls": latency_calls, "rows": len(texts), "load_seconds": round(load_seconds, 3),
           "peak_memory_mb": peak.result["mb"], "memory_kind": peak.result["kind"], "export_mb": None,
           "device": ", ".join(device), "measured_at": now(),
           "how": f"a fresh process loads the model as predict does; after one warm-up batch, rows/s over {len(texts)} "
                  f"val rows in batches of {BATCH_SIZE} (the fastest of {BULK_PASSES} passes), latency the median of "
                  f"{latency_calls} one-row calls"}
    if export:
        out["export_mb"] = _export_mb(path)
    return out


def _export_mb(path: Path) -> float | None:
    """The merged export's size of a run, or the sum over an ensemble's member runs (their recorded sizes where
    measured, else measured now)."""
    if not is_ensemble(path):
        return round(export_size_mb(path), 2)
    total = 0.0
    for d in read_ensemble(path).run_dirs:
        known = ((read_run(d) or {}).get("serving") or {}).get("export_mb")
        total += known if known is not None else export_size_mb(d)
    return round(total, 2)


def in_fresh_process(path: str | Path, texts: list[str], *, timeout: float = TIMEOUT_SECONDS) -> dict:
    """`measure` in a new Python process (`python -m lorabench.inference.serving`): the memory of a process that
    only predicts. Never raises for a failed measurement: returns {"error": one line} instead (the run stays
    valid, its serving columns blank)."""
    with tempfile.TemporaryDirectory(prefix="lorabench-serving-") as tmp:
        rows, result = Path(tmp) / "rows.json", Path(tmp) / "result.json"
        write_atomic(rows, json.dumps(list(texts)[:SERVING_ROWS]))
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        t0 = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-m", "lorabench.inference.serving", str(path), str(rows), str(result)],
                                  capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"error": f"the measurement took longer than {timeout:.0f} s"}
        if done.returncode != 0 or not result.is_file():
            tail = (done.stderr or done.stdout or "").strip().splitlines()
            return {"error": tail[-1] if tail else f"exit status {done.returncode}"}
        out = json.loads(result.read_text(encoding="utf-8"))
        out["measure_seconds"] = round(time.perf_counter() - t0, 2)  # what the measurement added to the run (wall)
        return out


def _main(argv: list[str]) -> int:
    path, rows, result = argv
    texts = json.loads(Path(rows).read_text(encoding="utf-8"))
    with quiet():
        out = measure(path, texts)
    write_atomic(result, json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
