"""Shared helpers for the benchmark scripts: timing, CPU share, BENCHMARKS.md sections."""
from __future__ import annotations

import datetime as dt
import os
import re
import resource
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_MD = ROOT / "BENCHMARKS.md"


class Timer:
    """Wall and CPU seconds of a block; `cpu_util` = CPU seconds / (wall * cores)."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        self.cpu = self._cpu() - self.c0
        self.cpu_util = self.cpu / (self.wall * (os.cpu_count() or 1)) if self.wall else 0.0
        return False

    @staticmethod
    def _cpu() -> float:
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def header() -> str:
    from lorabench.runs.resources import versions
    v = versions()
    return (f"Measured {dt.date.today().isoformat()} on {os.cpu_count()} CPU cores ({_cpu_name()}), python {v['python']}, "
            f"torch {v['torch']}, transformers {v['transformers']}, peft {v['peft']}.")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def write_section(name: str, body: str) -> None:
    """Replace the section `## name` of BENCHMARKS.md (written by that script only) with `body`."""
    text = BENCH_MD.read_text() if BENCH_MD.exists() else "# Benchmarks\n\nEach section is rewritten by the script it names.\n"
    block = f"## {name}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(block + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    tmp = BENCH_MD.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(BENCH_MD)


def matmul_peak_gflops(repeats: int = 3) -> float:
    """The best fp32 matmul rate torch reaches here: max over shapes, layouts and libraries.

    Shapes: square, mid-size cubes (384-768: on 2 cores they run faster than large ones, cache)
    and the transformer's own. Layouts: `linear` (x @ W.T, MKL, the forward) and `mm` with a
    contiguous right operand (MKL, as in the input-gradient matmuls of the backward). Library:
    also oneDNN's linear where torch has it (`torch.ops.mkldnn._linear_pointwise`); it runs some
    shapes faster in isolation here, so leaving it out would flatter the share.
    """
    import torch
    onednn = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    best = 0.0
    for m, k, n in ((2048, 2048, 2048), (1024, 1024, 1024), (768, 768, 768), (512, 512, 512), (384, 384, 384),
                    (1056, 384, 384), (1056, 384, 1536), (1056, 1536, 384)):
        a, b = torch.randn(m, k), torch.randn(n, k)
        bt = b.t().contiguous()
        kernels = [lambda: torch.nn.functional.linear(a, b), lambda: a.mm(bt)]
        if onednn is not None:
            kernels.append(lambda: onednn(a, b, None, "none", [], ""))
        reps = max(3, int(2e10 / (2 * m * k * n)))
        for kernel in kernels:
            try:
                for _ in range(3):
                    kernel()
            except (RuntimeError, TypeError):  # this torch's oneDNN op has another signature: skip it
                continue
            for _ in range(repeats):
                t = time.perf_counter()
                for _ in range(reps):
                    kernel()
                best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t) / 1e9)
    return best


def padding_share(lengths, order, batch_size: int) -> float:
    """Share of the tokens that are padding when rows come in `order`, `batch_size` at a time."""
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - real / padded if padded else 0.0


def flops_per_token(model, rows, max_rows: int = 64) -> float:
    """Matmul FLOPs a training step performs per real token, counted by torch's FlopCounterMode.

    Forward + backward of each of the first `max_rows` rows alone (no padding), in the model's
    current set-up (so levers that skip work count less). Gradient-checkpointing recompute is not
    counted: turn checkpointing off before calling (the model-FLOPs convention).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    was_training = model.training
    model.train()
    total = tokens = 0
    for ids in rows[:max_rows]:
        x = torch.tensor([ids])
        with FlopCounterMode(display=False) as counter:
            model(input_ids=x, attention_mask=torch.ones_like(x)).logits.sum().backward()
        total += counter.get_total_flops()
        tokens += len(ids)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return total / tokens


def make_minilm_run(tmp: Path) -> Path:
    """A minilm-l6 + LoRA run fine-tuned on 500 bundled rows for one epoch (~30 s), in `tmp/run`: prediction and
    serving speed do not depend on how well the model was trained."""
    from lorabench.config import DataConfig, ExperimentConfig, LoraConfig, ModelConfig, TrainConfig
    from lorabench.pipeline.run import run_experiment
    from lorabench.quiet import quiet_libraries
    quiet_libraries()
    cfg = ExperimentConfig(name="bench", data=DataConfig(max_train_samples=500, max_eval_samples=200),
                           model=ModelConfig(name="minilm-l6", max_length=128), lora=LoraConfig(r=8),
                           train=TrainConfig(epochs=1, batch_size=32, learning_rate=5e-4, serving_cost=False))
    run_experiment(cfg, tmp / "run")
    return tmp / "run"
