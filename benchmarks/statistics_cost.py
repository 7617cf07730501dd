"""What the statistics, error analysis and serving cost add to a comparison (issue 24).

    .venv/bin/python benchmarks/statistics_cost.py [FOLDER] [--repeats N]

FOLDER: a finished comparison (default runs/quickstart, what `make demo` writes). Times, N times each (median):
the whole report (`lorabench report`: tables, plots, HTML) against its statistics alone (reading every model's
saved predictions, the paired bootstrap with McNemar and Holm, the error analysis and calibration). From the run
records: what measuring the serving cost added to each run (`serving.measure_seconds`, a fresh process) against the
run's own wall time. Prints the ratios and rewrites its BENCHMARKS.md section.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, header, write_section  # noqa: E402


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    from lorabench.reporting.error_analysis import analyse
    from lorabench.reporting.model_predictions import gather
    from lorabench.reporting.report import (
        _current_runs,
        _ensemble_row,
        _order,
        _statistics_config,
        aggregate,
        build_report,
    )
    from lorabench.reporting.uncertainty import split_statistics

    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default=str(ROOT / "runs" / "quickstart"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    source = Path(args.folder)
    if not (source / "results.json").is_file():
        raise SystemExit(f"{source}: not a finished comparison (run `make demo` first)")
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / source.name  # a copy: the user's report is not rewritten
        shutil.copytree(source, folder, symlinks=True)
        runs = _current_runs(folder)
        cfg = _statistics_config(folder)

        def stats_only():
            rows = aggregate([r for _, r in runs])
            order = _order(folder, [r["label"] for r in rows])
            ensemble, _, _ = _ensemble_row(folder)
            rows += [ensemble] if ensemble else []
            preds, _ = gather(folder, runs, order, ensemble)
            split_statistics(preds, rows, cfg)
            analyse(folder, preds)

        whole = _median_seconds(lambda: build_report(folder), args.repeats)
        part = _median_seconds(stats_only, args.repeats)
    results = json.loads((source / "results.json").read_text())
    rows_n = (results.get("statistics") or {}).get("rows")
    lines = [header() + f" Median of {args.repeats}; comparison `{source.name}` ({rows_n} val rows, "
             f"{cfg.bootstrap_resamples} bootstrap resamples).", "",
             "| what | seconds | share |", "|---|---|---|",
             f"| the whole report (`lorabench report`) | {whole:.2f} | 100% |",
             f"| its statistics, error analysis and calibration | {part:.2f} | {part / whole:.0%} |", "",
             "| run | training run (wall s) | serving-cost measurement (s) | added |", "|---|---|---|---|"]
    total_run = total_serving = 0.0
    for _, rec in runs:
        s = rec.serving or {}
        if s.get("measure_seconds") is None or not rec.wall_seconds:
            continue
        total_run += rec.wall_seconds
        total_serving += s["measure_seconds"]
        lines.append(f"| {rec.label} | {rec.wall_seconds:.0f} | {s['measure_seconds']:.1f} | "
                     f"{s['measure_seconds'] / rec.wall_seconds:.0%} |")
    ens = json.loads((source / "ensemble" / "ensemble.json").read_text()).get("serving", {}) \
        if (source / "ensemble" / "ensemble.json").is_file() else {}
    if ens.get("measure_seconds") is not None:
        lines.append(f"| ensemble | | {ens['measure_seconds']:.1f} | |")
        total_serving += ens["measure_seconds"]
    if total_run:
        lines += ["", f"Serving cost adds {total_serving:.0f} s to {total_run:.0f} s of runs "
                      f"({total_serving / total_run:.0%}); the statistics {part:.1f} s to the report."]
    text = "\n".join(lines)
    print(text)
    write_section("What the statistics and serving cost add (benchmarks/statistics_cost.py)", text)


if __name__ == "__main__":
    main()
