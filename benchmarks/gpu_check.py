"""GPU check: one ~1B Llama trained by `lorabench train` in bf16, fp16 and 4-bit, spread with a device map
and data parallel; samples/s, peak memory per device and the share of the bf16 matmul peak of this run.

    python benchmarks/gpu_check.py [--rows 4000] [--val 500] [--timeout 150] [--budget 450] [--json out.json]
                                   [--only bf16,4bit] [--keep]
    python benchmarks/gpu_check.py --smoke            # CPU check of the code paths: tiny shape, 200 rows, ~1 min

The model: a Llama built from config (TinyLlama-1.1B shape: 22 layers, hidden 2048, 32 heads, 4 kv heads,
FFN 5632; random weights saved as bf16 safetensors; tokenizer fit on the bundled tweets), built once into a
temp folder. Every variant is the same `lorabench train` run (bundled disaster tweets, --rows train / --val
val rows, seed 42, batch 16 per device, max_length 128, 1 epoch, LoRA r 8 on q_proj/v_proj) in its own
subprocess (a clean CUDA context, its own peak memory), with its own config YAML; the numbers come from
its run.json:

  bf16        model.dtype bfloat16: bf16 weights + bf16 autocast (LoRA and head fp32), one GPU
  fp16        model.dtype float16: fp16 weights + fp16 autocast + grad scaler, one GPU (skipped by --smoke:
              fp16 training needs a GPU)
  4bit        model.quantization 4bit (QLoRA: NF4, double quantization, compute in the run's dtype), one GPU
  device_map  model.device_map auto: the layers spread over all GPUs of the machine, one process (on a
              one-GPU machine it runs on that GPU, so it checks the code path only; said in the table)
  ddp         data parallel: `python -m torch.distributed.run --standalone --nproc_per_node <GPUs> -m
              lorabench train ...`, one process per GPU, batch 16 each (skipped with one GPU; --smoke runs
              2 CPU processes over gloo)

Formulas (real tokens: padding excluded; N = the built model's parameters, embeddings included):
  samples/s  = run.json throughput.train_samples_per_second (optimizer steps x global batch / pure train s)
  tokens/s   = run.json throughput.train_tokens_per_second (samples/s x mean real tokens per row)
  TFLOP/s    = 4 x N x tokens/s / 1e12: forward (2N per token) + the activation gradients of the backward
               (2N); LoRA's weight gradients (r 8) and attention scores (<=128 tokens) are left out
  share      = TFLOP/s / (bf16 matmul peak x GPUs the variant uses); the peak is an 8192^3 bf16 matmul
               timed in this run (best of before and after the variants)
Single-GPU variants see one GPU (CUDA_VISIBLE_DEVICES), else the Trainer would wrap them in DataParallel.
Each variant has a time limit (--timeout, and whatever is left of --budget for the whole script); a
variant that fails or runs out of time is reported with its log's last lines, and the script exits 1
after printing the table. Rewrites its BENCHMARKS.md section (not with --smoke). Val F1 of a random-weight
model is not a quality measure.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import ROOT, header, write_section  # noqa: E402
from gpu_speed import SHAPE_1B, SHAPE_SMOKE, bf16_matmul_peak_tflops, build_llama  # noqa: E402

sys.path.insert(0, str(ROOT / "src"))  # this checkout's lorabench, installed or not
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SECTION = "GPU check: bf16, fp16, 4-bit, device map, DDP on a 1B Llama (benchmarks/gpu_check.py)"

# key, label, model-section keys; `procs`: None = one process seeing one device
VARIANTS = [
    ("bf16", "bf16 weights + bf16 autocast", {"dtype": "bfloat16"}),
    ("fp16", "fp16 weights + fp16 autocast + grad scaler", {"dtype": "float16"}),
    ("4bit", "4-bit NF4 (QLoRA), dtype auto", {"quantization": "4bit"}),
    ("device_map", "device_map auto, bf16", {"dtype": "bfloat16", "device_map": "auto"}),
    ("ddp", "DDP, bf16", {"dtype": "bfloat16"}),
]


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_config(key: str, model_dir: Path, model: dict, args) -> dict:
    return {"name": f"gpu-check-{key}",
            "data": {"max_train_samples": args.rows, "max_eval_samples": args.val},
            "model": {"name": str(model_dir), "max_length": 128, **model},
            "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
            "train": {"epochs": 1, "batch_size": 16, "eval_batch_size": 64, "learning_rate": 2e-4, "seed": 42,
                      "logging_steps": 10_000}}


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc): torchrun starts its workers in sessions of their own."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def run_variant(cmd: list[str], env: dict, log_path: Path, timeout: float) -> str | None:
    """Run `cmd` in its own process group, output to `log_path`; None when it exits 0, else why not.
    On timeout (or Ctrl-C) it and every process below it (torchrun's workers) are killed."""
    with open(log_path, "w") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except BaseException as e:  # timeout or Ctrl-C: take the group down with us
            below = descendants(p.pid)
            for pid in [p.pid, *below]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.wait()
            if not isinstance(e, subprocess.TimeoutExpired):
                raise
            return f"timed out after {timeout:.0f} s"
    return None if rc == 0 else f"exit code {rc}"


def log_tail(path: Path, n: int = 15) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join("    " + line for line in lines[-n:])


def summarise(rec: dict, n_params: int, peak: float | None) -> dict:
    """The table's numbers from one run.json."""
    tp, mem = rec["throughput"], rec["peak_memory"]
    per_dev = mem.get("per_process_mb") or mem.get("per_device_mb") or [mem["mb"]]
    world = (rec.get("parallel") or {}).get("world_size", 1)
    gpus = world
    if rec.get("device_map"):
        gpus = len({d for d in rec["device_map"].values() if d not in ("cpu", "disk")}) or 1
    tflops = 4 * n_params * tp["train_tokens_per_second"] / 1e12
    prec = rec.get("precision") or {}
    return {"samples_per_s": tp["train_samples_per_second"], "tokens_per_s": tp["train_tokens_per_second"],
            "tflops": tflops, "share": tflops / (peak * gpus) if peak else None, "gpus": gpus,
            "world_size": world, "peak_mb_per_device": per_dev, "memory_kind": mem.get("kind"),
            "val_f1": rec["metrics"]["val"]["f1"], "pure_train_s": rec.get("pure_train_seconds"),
            "weights": prec.get("weights_dtype"), "autocast": prec.get("autocast"),
            "quantization": rec.get("quantization"), "device_map": rec.get("device_map")}


def size(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"


def table(results: list[dict]) -> str:
    rows = ["| variant | weights / autocast | devices (processes) | samples/s | real tokens/s | TFLOP/s "
            "| share of bf16 peak | peak memory per device | val F1 | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["status"] != "ok":
            rows.append(f"| {r['key']}: {r['label']} | {r['status']}: {r['reason']} |||||||||")
            continue
        m = r["metrics"]
        share = f"{100 * m['share']:.1f}%" if m["share"] is not None else "—"
        mem = " / ".join(f"{x:.0f}" for x in m["peak_mb_per_device"]) + " MB"
        if m["memory_kind"] == "cpu_peak_rss":
            mem += " RSS"
        q = "nf4" if m["quantization"] == "4bit" else m["weights"]
        label = r["label"] + (f" ({r['note']})" if r.get("note") else "")
        rows.append(f"| {r['key']}: {label} | {q} / {m['autocast'] or 'none'} | {m['gpus']} ({m['world_size']}) | "
                    f"{m['samples_per_s']:.1f} | {m['tokens_per_s']:.0f} | {m['tflops']:.2f} | {share} | {mem} | "
                    f"{m['val_f1']:.4f} | {r['wall_s']:.0f} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, help="train rows (default 4000; 200 with --smoke)")
    ap.add_argument("--val", type=int, help="val rows (default 500; 100 with --smoke)")
    ap.add_argument("--timeout", type=float, help="seconds per variant, start-up included (default 150; 120 smoke)")
    ap.add_argument("--budget", type=float, default=450, help="seconds for the whole script; a variant gets at "
                    "most what is left (default 450: under 8 minutes with the build and the peak)")
    ap.add_argument("--only", help="comma-separated variant keys to run (default: all)")
    ap.add_argument("--json", type=Path, help="write the results here as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (model, configs, logs, runs)")
    ap.add_argument("--smoke", action="store_true", help="CPU only, tiny shape: checks the code paths, writes "
                    "no BENCHMARKS.md")
    args = ap.parse_args()
    args.rows = args.rows or (200 if args.smoke else 4000)
    args.val = args.val or (100 if args.smoke else 500)
    args.timeout = args.timeout or (120 if args.smoke else 150)
    t_start = time.perf_counter()
    import torch
    import yaml
    n_gpus = 0 if args.smoke else torch.cuda.device_count()
    if not args.smoke and not n_gpus:
        log("no CUDA device here (use --smoke for a CPU check of the code paths)")
        return 2
    only = set(args.only.split(",")) if args.only else None
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    env.setdefault("LORABENCH_CACHE", str(tmp / "cache"))
    if args.smoke:
        env.update(CUDA_VISIBLE_DEVICES="", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")  # tiny ops: 1 thread
    first_gpu = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
    gpu = torch.cuda.get_device_name(0) if n_gpus else "CPU (smoke)"
    log(f"{gpu}, {n_gpus} GPU(s); building the {'smoke' if args.smoke else '1.1B'} Llama in {tmp}")
    t = time.perf_counter()
    n_params = build_llama(tmp / "llama", SHAPE_SMOKE if args.smoke else SHAPE_1B)
    log(f"built: {size(n_params)} parameters in {time.perf_counter() - t:.0f} s")
    peak = None
    if n_gpus:
        peak = max(bf16_matmul_peak_tflops() for _ in range(3))  # the first call also warms the clocks up
        torch.cuda.empty_cache()
        log(f"bf16 matmul peak: {peak:.0f} TFLOP/s")

    results = []
    for key, label, model in VARIANTS:
        r = {"key": key, "label": label, "status": "ok", "reason": None, "note": None}
        results.append(r)
        procs = 1
        if only is not None and key not in only:
            r.update(status="skipped", reason="not in --only")
        elif key == "fp16" and args.smoke:
            r.update(status="skipped", reason="fp16 training needs a GPU (lorabench refuses it on CPU)")
        elif key == "device_map" and args.smoke:
            r.update(status="skipped", reason="a device map places weights on GPUs: CUDA only")
        elif key == "ddp":
            procs = 2 if args.smoke else n_gpus
            if procs < 2:
                r.update(status="skipped", reason="one GPU here: data parallel needs two or more")
        elif key == "device_map" and n_gpus < 2:
            r["note"] = "one GPU here: code path only"
        if r["status"] != "ok":
            log(f"{key}: skipped ({r['reason']})")
            continue
        left = args.budget - (time.perf_counter() - t_start) - 15  # 15 s for the closing peak and the table
        if left < 30:
            r.update(status="failed", reason=f"not run: {left + 15:.0f} s left of the --budget {args.budget:.0f} s")
            log(f"{key}: {r['reason']}")
            continue
        timeout = min(args.timeout, left)
        cfg = tmp / f"{key}.yaml"
        cfg.write_text(yaml.safe_dump(train_config(key, tmp / "llama", model, args), sort_keys=False))
        out = tmp / "runs" / key
        cmd = [sys.executable, "-m", "lorabench", "train", str(cfg), "--output-dir", str(out)]
        venv = dict(env)
        if procs > 1:
            cmd[1:3] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "lorabench"]
        elif not args.smoke and key != "device_map":
            venv["CUDA_VISIBLE_DEVICES"] = first_gpu
        log(f"{key}: {label}, {procs} process(es), time limit {timeout:.0f} s ...")
        t = time.perf_counter()
        error = run_variant(cmd, venv, tmp / f"{key}.log", timeout)
        r["wall_s"] = time.perf_counter() - t
        if error is None and not (out / "run.json").is_file():
            error = "no run.json written"
        if error is None:
            try:
                r["metrics"] = summarise(json.loads((out / "run.json").read_text()), n_params, peak)
            except (KeyError, TypeError, ValueError) as e:
                error = f"run.json unreadable: {type(e).__name__}: {e}"
        if error is not None:
            r.update(status="failed", reason=error, log_tail=log_tail(tmp / f"{key}.log", 40))
            log(f"{key}: FAILED ({error}) after {r['wall_s']:.0f} s; its log ends:\n{log_tail(tmp / f'{key}.log', 15)}")
            continue
        m = r["metrics"]
        log(f"{key}: {m['samples_per_s']:.1f} samples/s, {m['tflops']:.2f} TFLOP/s, peak "
            f"{max(m['peak_mb_per_device']):.0f} MB, val F1 {m['val_f1']:.4f}, {r['wall_s']:.0f} s")

    if n_gpus:
        peak = max(peak, bf16_matmul_peak_tflops())
        for r in results:  # shares against the best peak seen
            if r["status"] == "ok":
                r["metrics"]["share"] = r["metrics"]["tflops"] / (peak * r["metrics"]["gpus"])
    failed = [r["key"] for r in results if r["status"] == "failed"]
    cmdline = f"python benchmarks/gpu_check.py --rows {args.rows} --val {args.val}" + (" --smoke" if args.smoke else "")
    memory = "peak RSS per process" if args.smoke else "max allocated per GPU (per process under DDP)"
    body = (f"`{cmdline}` — a {size(n_params)}-parameter Llama built from config (random weights), "
            f"LoRA r 8 on q_proj/v_proj, {args.rows} train / {args.val} val rows, batch 16 per device, max_length "
            f"128, 1 epoch, on {n_gpus} x {gpu}; bf16 matmul peak measured in this run "
            f"{f'{peak:.0f} TFLOP/s' if peak else '— (CPU)'}. TFLOP/s = 4 x N x real tokens/s; share = TFLOP/s / "
            f"(peak x GPUs used). Peak memory: {memory}. Wall s: the "
            f"variant's process from start to exit (start-up, load, eval included). {header()}\n\n" + table(results) +
            "\n\nVal F1 of a random-weight model is not a quality measure.")
    print("\n" + body, flush=True)
    if args.json:
        args.json.write_text(json.dumps({"gpu": gpu, "gpus": n_gpus, "bf16_peak_tflops": peak, "params": n_params,
                                         "rows": args.rows, "val": args.val, "smoke": args.smoke,
                                         "seconds": time.perf_counter() - t_start, "variants": results}, indent=2))
    if not args.smoke and not only:
        write_section(SECTION, body)
    if args.keep:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"done in {time.perf_counter() - t_start:.0f} s; " + (f"FAILED: {', '.join(failed)}" if failed else "all ran"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
