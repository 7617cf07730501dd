"""Plan before you rent a GPU: for each model of a train or compare config, without downloading weights
(config.json only, built on the meta device), the parameter counts, the memory per GPU, the FLOPs per
epoch and the training time on a named GPU, and whether it fits.

Units: memory in MB = 2**20 bytes (MiB, as run.json's peak_memory_mb: torch.cuda.max_memory_allocated / 2**20),
FLOPs as counts (floating-point operations), throughput in TFLOP/s = 1e12 FLOP/s, time in seconds.

The model, in one place:
- Weights: frozen weights at the run's dtype (`precision.decide`); with `model.quantization` the frozen
  nn.Linear weights outside the head at NF4_BYTES (4bit) or 1 byte + a float32 scale per output row (8bit),
  and every other frozen weight (embeddings, norms, biases, the head) in float32, as peft's
  `prepare_model_for_kbit_training` (used by the builder) leaves them. Trainable weights (LoRA, head;
  every weight in full fine-tuning) float32 (4 B) plus their half-precision copy under autocast (2 B:
  autocast caches the casts of weights that require grad), gradients float32 (4 B, once more for DDP's
  gradient buckets with several processes), AdamW's two moments float32 (8 B).
- Activations per transformer layer: Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
  Transformer Models", arXiv:2205.05198, eq. 1): s*b*h*(34 + 5*a*s/h) bytes in half precision, i.e.
  attention 11sbh + 5as^2b, MLP 19sbh, norms 4sbh. The MLP term is written for the model's intermediate size i
  (3sbh + 4sbi; gated MLPs such as Llama's 3sbh + 8sbi; 19sbh at i = 4h), plus 3sbh per LoRA module with
  dropout (its dropped-out input and mask). Float32 runs (no autocast) take twice as much. With gradient
  checkpointing: each layer's input (2sbh) plus one layer's activations recomputed in backward. Against the
  tensors autograd saves (saved_tensors_hooks, 4-layer Llama and RoBERTa, b=8, s=64, CPU) it came out 0.9-1.2x
  in bf16 and 1.3-1.4x in fp32 (tests/test_plan.py keeps a bf16 check). s = the longest training text in
  tokens (capped at model.max_length), b = train.batch_size per device. With `model.device_map` the layers
  (weights, their states, activations) are split evenly over the GPUs; `model.max_memory` is not modelled.
- CUDA_OVERHEAD_MB per device for the CUDA context, cuBLAS workspace and allocator slack (an assumption).
- FLOPs: forward F = 2*N*tokens + 4*L*h*s*tokens (N = non-embedding parameters, Kaplan et al. 2020,
  arXiv:2001.08361; attention's QK^T and AV as in Hoffmann et al. 2022, arXiv:2203.15556, app. F). Training:
  F forward + F backward through the activations + 2*N_trained*tokens for weight gradients (full fine-tuning:
  N_trained = N, i.e. Kaplan's 6N) + F when gradient checkpointing recomputes the forward. Validation: F on the
  val tokens once per epoch. Tokens are the padded tokens of the batches the run makes (length buckets,
  or random batches), from real token lengths.
- Time = FLOPs / (peak x utilisation x data-parallel GPUs): the fp16/bf16 tensor peak under autocast, the fp32
  peak otherwise; or, when larger, the weight traffic / memory bandwidth (the roofline, Williams et al. 2009): every
  micro-batch streams the weights in forward and backward (once more with gradient checkpointing), every optimiser
  step reads and writes the trainable weights, gradients and AdamW moments (32 bytes each), every val batch streams
  the weights once. The plan says which bound sets each phase's time.
- Serving (what `predict` / `serve` would do on this hardware): a batch of B rows of the val set's mean length takes
  max(B x forward FLOPs per row / (peak x utilisation), weight bytes / bandwidth): rows/s at B = 64 and the latency
  of one row. One short row through a large model is bound by streaming its weights, not by compute. With `model.device_map` the GPUs hold one model's layers in turn (naive model parallel, the
  study's): one works at a time, so the time is one GPU's. Not modelled: 4-bit/8-bit dequantisation time,
  `train.pooled_only_last_layer` (saves up to 1/L of an encoder's layer work), checkpoint saving, data loading.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lorabench.config.loading import load_config, read_yaml
from lorabench.config.schema import CompareConfig, ExperimentConfig, SweepConfig
from lorabench.data.splits import load_splits
from lorabench.data.windows import window_lengths
from lorabench.errors import ConfigError, DataWarning, LorabenchError
from lorabench.models.build import attach_lora, load_model_config, token_lengths
from lorabench.models.precision import decide
from lorabench.planning.gpus import GPU
from lorabench.planning.gpus import gpu as find_gpu
from lorabench.quiet import quiet
from lorabench.training.batch import resolve_batch

MB = 2**20
CUDA_OVERHEAD_MB = 500          # per device, not in max_memory_allocated: an assumption, not a measurement
DEFAULT_UTILIZATION = 0.3       # model-FLOPs utilisation: see DEFAULT_UTILIZATION_WHY
DEFAULT_UTILIZATION_WHY = (
    "0.3: large, tuned training runs reach 21-46% of peak (PaLM paper, Chowdhery et al. 2022, arXiv:2204.02311, "
    "table 3: GPT-3 21%, Megatron-Turing NLG 30%, PaLM 46%); a small-batch fine-tune does no better")
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)   # QLoRA (arXiv:2305.14314): 4 bits + 8-bit absmax per 64 weights
                                            # + an fp32 constant per 256 blocks = 4.127 bits per weight
INT8_BYTES = 1.0                            # LLM.int8 (arXiv:2208.07339): int8 weights + fp32 scale per row
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
CHARS_PER_TOKEN = 4                         # estimate without a tokenizer: ceil(chars / 4) + special tokens


@dataclass
class Hardware:
    """What is planned for: `gpus` x `gpu`. Peaks in TFLOP/s, memory in GB (taken as GiB) per GPU."""
    gpu: str
    gpus: int
    memory_gb: float
    half_tflops: float
    fp32_tflops: float
    bf16: bool
    utilization: float
    source: str
    bandwidth_gbs: float = 0.0  # GB/s = 1e9 bytes/s (0: unknown, compute alone sets the time)
    cpu: bool = False

    @property
    def memory_mb(self) -> float:
        return self.memory_gb * 1024


@dataclass
class Memory:
    """Memory per device in MB (2**20 bytes), at the peak of a training step. `devices`: how many GPUs
    share one model's layers (model parallel); 1 otherwise. `activations_other_mb`: the activations
    with the other gradient-checkpointing setting."""
    weights_mb: float
    trainable_mb: float
    gradients_mb: float
    optimizer_mb: float
    activations_mb: float
    activations_other_mb: float
    overhead_mb: float
    devices: int = 1

    @property
    def total_mb(self) -> float:
        return (self.weights_mb + self.trainable_mb + self.gradients_mb + self.optimizer_mb
                + self.activations_mb + self.overhead_mb)


@dataclass
class ModelPlan:
    """One model's plan. Parameter counts as peft counts them (trainable, total); token counts are padded
    tokens per epoch; FLOPs are counts; seconds at the hardware's peak x utilisation."""
    label: str
    name: str
    kind: str = "transformer"                 # or "baseline" (tfidf-logreg: no GPU)
    method: str = ""
    total_params: int = 0
    trainable_params: int = 0
    precision: dict = field(default_factory=dict)
    tokens: dict = field(default_factory=dict)
    memory: Memory | None = None
    train_flops_per_epoch: float = 0.0
    val_flops_per_epoch: float = 0.0
    epochs: float = 0.0
    flops: float = 0.0
    seconds: float = 0.0
    tflops_used: float = 0.0
    parallel: str = "one GPU"
    compute_seconds: float = 0.0   # FLOPs / (peak x utilisation), every phase
    memory_seconds: float = 0.0    # weight traffic / bandwidth, every phase
    bound: str = "compute"         # what sets the training time: compute, memory bandwidth
    traffic_bytes: float = 0.0     # bytes streamed from memory over the whole run
    serving: dict = field(default_factory=dict)  # rows/s at a batch and one row's latency, with their bounds
    fits: bool = True
    fixes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def trainable_pct(self) -> float:
        return 100.0 * self.trainable_params / self.total_params if self.total_params else 0.0

    @property
    def flops_per_epoch(self) -> float:
        return self.train_flops_per_epoch + self.val_flops_per_epoch


@dataclass
class Plan:
    hardware: Hardware
    models: list[ModelPlan]

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["units"] = {"memory": "MB = 2**20 bytes, per device", "flops": "floating-point operations",
                        "tflops": "1e12 FLOP/s", "time": "seconds", "memory_gb": "GB as marketed, taken as GiB"}
        out["assumptions"] = {"cuda_overhead_mb": CUDA_OVERHEAD_MB, "utilization": DEFAULT_UTILIZATION_WHY,
                              "nf4_bytes_per_weight": NF4_BYTES, "chars_per_token_without_tokenizer": CHARS_PER_TOKEN}
        for m, d in zip(self.models, out["models"]):
            if m.memory is not None:
                d["memory"]["total_mb"] = m.memory.total_mb
            d["trainable_pct"] = m.trainable_pct
        return out


# --------------------------------------------------------------------------- config
def load_plan_config(path: str | Path, overrides: list[str] | None = None):
    """The config at `path` as `lorabench data` reads it: a compare config if it has `models:`, a sweep's
    base experiment if it has `sweep:`, else one experiment. Raises `ConfigError` as `load_config`."""
    raw = read_yaml(path)
    if "sweep" in raw:
        return load_config(SweepConfig, path, overrides).base()
    return load_config(CompareConfig if "models" in raw else ExperimentConfig, path, overrides)


def _experiments(cfg) -> list[ExperimentConfig]:
    """One experiment per model label (seeds do not change a plan; k-fold: fold 1 stands for every fold)."""
    if isinstance(cfg, CompareConfig):
        return [cfg.experiment(e, cfg.run_seeds[0], 1 if cfg.data.folds else None) for e in cfg.models]
    if isinstance(cfg, SweepConfig):
        return [cfg.base()]
    if cfg.data.folds and cfg.data.fold is None:
        import dataclasses
        return [dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fold=1))]
    return [cfg]


# --------------------------------------------------------------------------- the model, on the meta device
@dataclass
class _Inventory:
    """Parameter counts (elements) by how they are stored, and the shape the activation model needs."""
    total: int
    trainable: int
    frozen_linear: int        # frozen nn.Linear weights outside the head: what bitsandbytes quantizes
    frozen_linear_rows: int   # their output rows (8-bit: one fp32 scale each)
    frozen_other: int
    matmul: int               # N: parameters used per token (no embeddings, no peft's idle head copy)
    layers: int
    hidden: int
    heads: int
    intermediate: int
    gated: bool
    lora_modules_per_layer: float
    decoder: bool
    targets: list[str]
    path: str                 # the resolved model folder (or hub id)


def _dim(cfg, *names, default=None) -> int:
    for n in names:
        v = getattr(cfg, n, None)
        if v:
            return int(v)
    if default is None:
        raise LorabenchError(f"cannot plan {getattr(cfg, 'model_type', '?')}: its config has none of {names}")
    return int(default)


def inventory(exp: ExperimentConfig, num_labels: int) -> _Inventory:
    """Build `exp`'s classifier from its config.json on the meta device (no weights, no memory), attach
    LoRA as training does, and count its parameters (peft's `get_nb_trainable_parameters`)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    source, hf_config, arch = load_model_config(exp.model, exp.lora)
    hf_config.num_labels = num_labels
    if getattr(hf_config, "pad_token_id", None) is None:
        eos = getattr(hf_config, "eos_token_id", None)
        hf_config.pad_token_id = (eos[0] if isinstance(eos, list) else eos) if eos is not None else 0
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(hf_config, trust_remote_code=exp.model.trust_remote_code)
    if exp.lora is not None:
        model = attach_lora(model, exp.lora, arch)
        trainable, total = model.get_nb_trainable_parameters()
    else:
        trainable = total = sum(p.numel() for p in model.parameters())
    head = {arch.head, *arch.head_parts, "classifier", "score"}  # never quantized (models.build.loading_kwargs)
    linear = rows = other = matmul = 0
    embedding_params = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    seen: set[int] = set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:  # a tied weight, counted once
                continue
            seen.add(id(p))
            if id(p) not in embedding_params and "original_module" not in mname:
                matmul += p.numel()
            if p.requires_grad:  # LoRA and the head's trained copy; every weight in full fine-tuning
                continue
            if type(module) is torch.nn.Linear and pname == "weight" and not head & set(mname.split(".")):
                linear += p.numel()
                rows += module.out_features
            else:
                other += p.numel()
    c = hf_config
    layers = _dim(c, "num_hidden_layers", "n_layer", "n_layers")
    hidden = _dim(c, "hidden_size", "n_embd", "d_model", "dim")
    lora_modules = sum(1 for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer"))
    return _Inventory(
        total=int(total), trainable=int(trainable), frozen_linear=linear, frozen_linear_rows=rows,
        frozen_other=other, matmul=matmul, layers=layers, hidden=hidden,
        heads=_dim(c, "num_attention_heads", "n_head", "n_heads"),
        intermediate=_dim(c, "intermediate_size", "n_inner", "ffn_dim", "hidden_dim", default=4 * hidden),
        gated=any(n.endswith(("gate_proj", "w1", "gate_up_proj")) for n, _ in model.named_modules()),
        lora_modules_per_layer=lora_modules / layers, decoder=arch.decoder,
        targets=sorted(model.peft_config["default"].target_modules) if exp.lora is not None else [],
        path=source.path)


# --------------------------------------------------------------------------- token lengths and batches
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "merges.txt",
                   "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")


def lengths_for(exp: ExperimentConfig, texts: list[str], inv: _Inventory) -> tuple[list[int], str]:
    """(tokens per text, where they come from). With the model's tokenizer: `lorabench data`'s counting.
    Without one (a folder holding only config.json; transformers would build an empty tokenizer there
    that counts special tokens only): ceil(characters / CHARS_PER_TOKEN) + the special tokens (BOS for
    decoders, CLS + SEP for encoders)."""
    folder = Path(inv.path)
    if not folder.is_dir() or any((folder / f).is_file() for f in TOKENIZER_FILES):
        try:
            return token_lengths(texts, exp.model), "tokenizer"
        except ConfigError:
            raise
        except Exception:  # a tokenizer that cannot load: estimate as without one
            pass
    special = 1 if inv.decoder else 2
    return ([math.ceil(len(t) / CHARS_PER_TOKEN) + special for t in texts],
            f"estimated from characters: no tokenizer; ceil(chars/{CHARS_PER_TOKEN}) + {special}")


def batch_sums(lengths: list[int], batch: int, mode: str, draws: int = 8) -> tuple[float, float]:
    """(sum of b*s, sum of b*s^2) over one epoch's batches: b rows padded to their longest, s tokens.
    mode `buckets`: lorabench's tight length buckets (one bucket per optimiser step of every process; sorted
    evaluation); `random`: random batches, averaged over `draws` seeded shuffles."""
    a = np.asarray(lengths, dtype=np.int64)
    if len(a) == 0:
        return 0.0, 0.0

    def sums(order):
        x = a[order].astype(float)
        full = len(x) // batch * batch
        longest = x[:full].reshape(-1, batch).max(axis=1)
        tok, sq = batch * longest.sum(), batch * (longest ** 2).sum()
        if full < len(x):  # the last, partial batch
            tok, sq = tok + (len(x) - full) * x[full:].max(), sq + (len(x) - full) * x[full:].max() ** 2
        return tok, sq

    if mode == "buckets":
        return sums(np.argsort(a, kind="stable"))
    rng = np.random.default_rng(0)
    out = np.zeros(2)
    for _ in range(draws):
        order = rng.permutation(len(a))
        out += sums(order)
    return tuple(out / draws)


# --------------------------------------------------------------------------- memory and FLOPs
def activation_bytes(inv: _Inventory, batch: int, seq: int, *, half: bool, checkpointing: bool,
                     lora_dropout: float) -> float:
    """Activation memory (bytes) of one training step over all layers (see the module docstring)."""
    s, b, h, a = seq, batch, inv.hidden, inv.heads
    sbh = s * b * h
    mlp = 3 * sbh + (8 if inv.gated else 4) * s * b * inv.intermediate
    lora = 3 * sbh * inv.lora_modules_per_layer if lora_dropout > 0 else 0.0
    layer = 15 * sbh + mlp + 5 * a * s * s * b + lora
    total = 2 * sbh * inv.layers + layer if checkpointing else layer * inv.layers
    return total * (1 if half else 2)


def _memory(inv: _Inventory, exp: ExperimentConfig, precision, seq: int, gpus: int) -> Memory:
    model_parallel = exp.model.device_map is not None
    wbytes = DTYPE_BYTES[precision.weights_dtype]
    q = precision.quantization
    if q and q.get("load_in_4bit"):
        frozen = inv.frozen_linear * NF4_BYTES + inv.frozen_other * 4
    elif q:
        frozen = inv.frozen_linear * INT8_BYTES + inv.frozen_linear_rows * 4 + inv.frozen_other * 4
    else:
        frozen = (inv.frozen_linear + inv.frozen_other) * wbytes
    half = precision.autocast is not None
    trainable = inv.trainable * (4 + (2 if half else 0))
    gradients = inv.trainable * 4 * (2 if gpus > 1 and not model_parallel else 1)
    lora_dropout = exp.lora.dropout if exp.lora else 0.0
    ckpt = exp.train.gradient_checkpointing
    act = activation_bytes(inv, exp.train.batch_size, seq, half=half, checkpointing=ckpt, lora_dropout=lora_dropout)
    other = activation_bytes(inv, exp.train.batch_size, seq, half=half, checkpointing=not ckpt, lora_dropout=lora_dropout)
    split = gpus if model_parallel else 1
    return Memory(weights_mb=frozen / MB / split, trainable_mb=trainable / MB / split,
                  gradients_mb=gradients / MB / split, optimizer_mb=inv.trainable * 8 / MB / split,
                  activations_mb=act / MB / split, activations_other_mb=other / MB / split,
                  overhead_mb=CUDA_OVERHEAD_MB, devices=split)


def _forward_flops(inv: _Inventory, tok: float, sq: float) -> float:
    return 2 * inv.matmul * tok + 4 * inv.layers * inv.hidden * sq


@dataclass
class _Data:
    train_lengths: list[int]
    val_lengths: list[int]
    source: str


def _resolved(exp: ExperimentConfig, data: _Data, gpus: int) -> ExperimentConfig:
    """`exp` with the batch `train.batch_size: auto` picks for this data and GPU count (training.batch)."""
    dp = 1 if exp.model.device_map is not None else gpus
    return dataclasses.replace(exp, train=resolve_batch(exp.train, len(data.train_lengths), dp)[0])


def _estimate(inv: _Inventory, exp: ExperimentConfig, data: _Data, hw: Hardware, gpus: int, mp: ModelPlan) -> ModelPlan:
    """Fill `mp` (precision, tokens, memory, FLOPs, time, fit) for `exp` on `gpus` x `hw`: arithmetic only."""
    exp = _resolved(exp, data, gpus)
    precision = decide(exp.model, cuda=not hw.cpu, bf16_supported=hw.bf16, full_finetune=exp.lora is None)
    t = exp.train
    model_parallel = exp.model.device_map is not None and gpus > 1
    dp = 1 if exp.model.device_map is not None else gpus
    cap = exp.model.max_length
    train = [min(n, cap) for n in data.train_lengths]
    val = [min(n, cap) for n in data.val_lengths]
    mode = "buckets" if t.group_by_length else "random"  # buckets per optimiser step, one process or several
    tok, sq = batch_sums(train, t.batch_size, mode)
    vtok, vsq = batch_sums(val, t.eval_batch_size or t.batch_size, "buckets")
    trained = inv.matmul if exp.lora is None else inv.trainable
    fwd = _forward_flops(inv, tok, sq)
    mp.train_flops_per_epoch = (2 + t.gradient_checkpointing) * fwd + 2 * trained * tok
    mp.val_flops_per_epoch = _forward_flops(inv, vtok, vsq)
    steps_per_epoch = math.ceil(len(train) / (t.batch_size * t.gradient_accumulation_steps * dp))
    mp.epochs = t.max_steps / steps_per_epoch if t.max_steps else float(t.epochs)
    evals = math.ceil(mp.epochs) if val else 0
    mp.flops = mp.train_flops_per_epoch * mp.epochs + mp.val_flops_per_epoch * evals
    mp.tflops_used = hw.half_tflops if precision.autocast else hw.fp32_tflops
    rate = mp.tflops_used * 1e12 * hw.utilization * dp
    mp.parallel = (f"model parallel over {gpus} GPUs (device_map {exp.model.device_map})" if model_parallel
                   else f"data parallel, {gpus} processes" if dp > 1 else "one CPU" if hw.cpu else "one GPU")
    mp.precision = {"weights": precision.weights_dtype, "trainable": precision.trainable_dtype,
                    "autocast": precision.autocast, "quantization": exp.model.quantization
                    if exp.model.quantization != "none" else None}
    seq = max(train) if train else 0
    mp.tokens = {"source": data.source, "train_rows": len(train), "val_rows": len(val),
                 "longest": seq, "max_length": cap, "mean": round(float(np.mean(train)), 1) if train else 0.0,
                 "train_padded_per_epoch": round(tok), "val_padded_per_epoch": round(vtok),
                 "batching": {"buckets": "length buckets",
                              "random": "random batches"}[mode], "batch_size": t.batch_size}
    mp.memory = _memory(inv, exp, precision, seq, gpus)
    if hw.cpu:
        mp.memory.overhead_mb = 0.0
    _roofline(mp, inv, exp, hw, rate, dp, len(train), len(val), evals, steps_per_epoch)
    _serving(mp, inv, val or train, hw, precision)
    mp.fits = mp.memory.total_mb <= hw.memory_mb
    return mp


def _weight_bytes(mp: ModelPlan) -> float:
    """Bytes of every weight of one model copy (frozen at their dtype, trainable in float32)."""
    m = mp.memory
    return (m.weights_mb + m.trainable_mb) * m.devices * MB


def _roofline(mp: ModelPlan, inv: _Inventory, exp: ExperimentConfig, hw: Hardware, rate: float, dp: int,
              train_rows: int, val_rows: int, evals: int, steps: int) -> None:
    """Each phase's time as the larger of its compute time and its weight traffic over the memory bandwidth."""
    t = exp.train
    weights = _weight_bytes(mp)
    micro = math.ceil(train_rows / (t.batch_size * dp))  # micro-batches per epoch and process
    val_batches = math.ceil(val_rows / ((t.eval_batch_size or t.batch_size) * dp))
    train_bytes = micro * (2 + t.gradient_checkpointing) * weights + steps * inv.trainable * 32
    val_bytes = val_batches * weights
    bw = hw.bandwidth_gbs * 1e9
    train_c = mp.train_flops_per_epoch * mp.epochs / rate
    val_c = mp.val_flops_per_epoch * evals / rate
    train_m = train_bytes * mp.epochs / bw if bw else 0.0
    val_m = val_bytes * evals / bw if bw else 0.0
    mp.compute_seconds, mp.memory_seconds = train_c + val_c, train_m + val_m
    mp.traffic_bytes = (train_bytes * mp.epochs + val_bytes * evals) * dp
    mp.seconds = max(train_c, train_m) + max(val_c, val_m)
    mp.bound = "memory bandwidth" if train_m > train_c else "compute"


SERVE_BATCH = 64  # predict's default batch size


def _serving(mp: ModelPlan, inv: _Inventory, lengths: list[int], hw: Hardware, precision) -> None:
    """Rows/s at SERVE_BATCH rows and one row's latency, predicting rows of the mean val length: each the larger
    of compute (forward FLOPs at the peak x utilisation) and streaming the weights once (bytes / bandwidth)."""
    if not lengths:
        return
    n = float(np.mean(lengths))
    flops_row = _forward_flops(inv, n, n * n)
    peak = (hw.half_tflops if precision.weights_dtype in ("bfloat16", "float16") or precision.autocast
            else hw.fp32_tflops) * 1e12 * hw.utilization
    weights = mp.memory.weights_mb * mp.memory.devices * MB + inv.trainable * DTYPE_BYTES[precision.weights_dtype]
    stream = weights / (hw.bandwidth_gbs * 1e9) if hw.bandwidth_gbs else 0.0
    batch_c, one_c = SERVE_BATCH * flops_row / peak, flops_row / peak
    mp.serving = {"batch": SERVE_BATCH, "mean_tokens": round(n, 1), "flops_per_row": flops_row,
                  "weight_bytes": weights, "rows_per_second": SERVE_BATCH / max(batch_c, stream),
                  "batch_bound": "memory bandwidth" if stream > batch_c else "compute",
                  "latency_ms": 1000 * max(one_c, stream),
                  "latency_bound": "memory bandwidth" if stream > one_c else "compute"}


def _with(exp: ExperimentConfig, section: str, **changes) -> ExperimentConfig:
    return dataclasses.replace(exp, **{section: dataclasses.replace(getattr(exp, section), **changes)})


def _options(exp: ExperimentConfig, hw: Hardware, gpus: int) -> list[list[tuple[str, Any, int | None]]]:
    """The ways to lower the memory per device, by kind, each kind's alternatives mildest first:
    (what to change, a function changing an experiment so, the GPUs it needs or None for unchanged)."""
    half = "bfloat16" if hw.bf16 else "float16"
    b, acc = exp.train.batch_size, exp.train.gradient_accumulation_steps
    start = gpus + 1 if exp.model.device_map is not None else max(2, gpus)
    return [
        [(f"model.dtype {half}", lambda e: _with(e, "model", dtype=half), None)]
        if exp.lora is not None and exp.model.dtype not in ("bfloat16", "float16") else [],
        [("model.quantization 4bit", lambda e: _with(e, "model", quantization="4bit"), None)]
        if exp.lora is not None and exp.model.quantization != "4bit" else [],
        [("train.gradient_checkpointing true", lambda e: _with(e, "train", gradient_checkpointing=True), None)]
        if not exp.train.gradient_checkpointing else [],
        [(f"train.batch_size {b // k} with gradient_accumulation_steps {acc * k} (same optimiser batch)",
          lambda e, k=k: _with(e, "train", batch_size=b // k, gradient_accumulation_steps=acc * k), None)
         for k in (2, 4, 8) if b % k == 0],
        [(f"model.device_map auto over {k} GPUs", lambda e: _with(e, "model", device_map=e.model.device_map or "auto"), k)
         for k in range(start, 9)],
    ]


def _fixes(inv: _Inventory, exp: ExperimentConfig, data: _Data, hw: Hardware, gpus: int) -> list[str]:
    """What makes `exp` fit, each candidate re-planned: every kind of option whose mildest fitting
    alternative fits alone; when none does, the first cumulative combination that fits (the options
    applied in order, each at its strongest before the next is added); [] when nothing fits."""
    def fits(e: ExperimentConfig, k: int) -> bool:
        return _estimate(inv, e, data, hw, k, ModelPlan("", "")).fits

    exp = _resolved(exp, data, gpus)
    kinds = _options(exp, hw, gpus)
    singles = []
    for alternatives in kinds:
        for what, change, k in alternatives:
            if fits(change(exp), k or gpus):
                singles.append(what)
                break
    if singles:
        return singles
    current, k_now, names = exp, gpus, []
    for alternatives in kinds:
        for what, change, k in alternatives:
            if fits(change(current), k or k_now):
                return [" + ".join(names + [what])]
        if alternatives:
            what, change, k = alternatives[-1]
            current, k_now = change(current), k or k_now
            names.append(what)
    return []


# --------------------------------------------------------------------------- entry point
def hardware(gpu: str = "A6000", gpus: int = 1, gpu_memory_gb: float | None = None, tflops: float | None = None,
             utilization: float = DEFAULT_UTILIZATION, bandwidth_gbs: float | None = None) -> Hardware:
    """The hardware to plan for: `gpus` x `gpu` (a name of `lorabench.planning.gpus.GPUS`), its memory per
    GPU (GB) and peak (TFLOP/s, replacing the table's fp16/bf16 and fp32 peaks) overridable; `utilization`:
    the share of the peak training achieves, in (0, 1]. An unknown name is planned when both
    `gpu_memory_gb` and `tflops` are given (bf16 assumed). Bad values raise `LorabenchError`."""
    if gpus < 1:
        raise LorabenchError(f"--gpus must be >= 1, got {gpus}")
    if not 0 < utilization <= 1:
        raise LorabenchError(f"--utilization must be in (0, 1], got {utilization}")
    for name, v in (("--gpu-memory", gpu_memory_gb), ("--tflops", tflops), ("--bandwidth", bandwidth_gbs)):
        if v is not None and not v > 0:
            raise LorabenchError(f"{name} must be > 0, got {v}")
    try:
        g = find_gpu(gpu)
    except LorabenchError:
        if gpu_memory_gb is None or tflops is None:
            raise
        g = GPU(gpu, tflops, tflops, gpu_memory_gb, True, "given on the command line")
    return Hardware(gpu=g.name, gpus=gpus, memory_gb=gpu_memory_gb or g.memory_gb,
                    half_tflops=tflops or g.half_tflops, fp32_tflops=tflops or g.fp32_tflops, bf16=g.bf16,
                    utilization=utilization, source=g.source if tflops is None else "--tflops",
                    bandwidth_gbs=bandwidth_gbs or g.bandwidth_gbs, cpu=g.cpu)


def plan(cfg, *, gpu: str = "A6000", gpus: int = 1, gpu_memory_gb: float | None = None, tflops: float | None = None,
         utilization: float = DEFAULT_UTILIZATION, bandwidth_gbs: float | None = None) -> Plan:
    """Plan every model of `cfg` (ExperimentConfig, CompareConfig or SweepConfig) on `gpus` x `gpu`,
    without weights: parameter counts, memory per device (MB = 2**20 bytes), FLOPs per epoch, time (s) at
    `utilization` of the peak, and what would make a model fit that does not. A model that cannot be
    planned (not found, offline) gets `error` set; `ConfigError` (a bad setting) is raised."""
    hw = hardware(gpu, gpus, gpu_memory_gb, tflops, utilization, bandwidth_gbs)
    models, splits = [], {}
    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # the data's own findings: `lorabench data` shows them
        for exp in _experiments(cfg):
            label = exp.label or (Path(exp.model.name).name if Path(exp.model.name).exists() else exp.model.name)
            mp = ModelPlan(label=label, name=exp.model.name)
            if exp.model.kind != "transformer":
                mp.kind, mp.method = "baseline", "TF-IDF + logistic regression on CPU"
                models.append(mp)
                continue
            key = repr(exp.data)
            if key not in splits:
                splits[key] = load_splits(exp.data)
            sp = splits[key]
            try:
                inv = inventory(exp, sp.num_labels)
            except ConfigError:
                raise
            except LorabenchError as e:
                mp.error = str(e)
                models.append(mp)
                continue
            lengths, source = lengths_for(exp, sp.train.texts + sp.val.texts, inv)
            n = len(sp.train.texts)
            train_len, val_len = lengths[:n], lengths[n:]
            if exp.data.long_text == "chunk":  # every window is a row to train on and to evaluate
                special = 1 if inv.decoder else 2
                train_len, val_len = (window_lengths(x, exp.model.max_length, special, exp.data.stride)
                                      for x in (train_len, val_len))
                source += (f"; long_text: chunk: {len(train_len)} train and {len(val_len)} val windows of "
                           f"{len(sp.train.texts)} and {len(sp.val.texts)} texts")
            data = _Data(train_len, val_len, source)
            mp.total_params, mp.trainable_params = inv.total, inv.trainable
            mp.method = (f"LoRA r={exp.lora.r} on {', '.join(inv.targets)}"
                         if exp.lora else "full fine-tuning")
            _estimate(inv, exp, data, hw, gpus, mp)
            if not mp.fits:
                mp.fixes = _fixes(inv, exp, data, hw, gpus)
            models.append(mp)
    return Plan(hw, models)


# --------------------------------------------------------------------------- text
def _mb(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.1f}"


def _time(s: float) -> str:
    return f"{s:,.0f} s ({s / 60:.1f} min)" if s < 3600 else f"{s:,.0f} s ({s / 3600:.1f} h)"


def _fit_line(mp: ModelPlan, hw: Hardware) -> str:
    where = f"{hw.gpus} x {hw.memory_gb:g} GB"
    if mp.fits:
        return f"fits on {where} (peak {_mb(mp.memory.total_mb)} MB per device)"
    fix = ("would fit with: " + "; or ".join(mp.fixes)) if mp.fixes else "nothing lorabench offers makes it fit here"
    return f"does not fit on {where}: needs {_mb(mp.memory.total_mb)} MB per device; {fix}"


def _traffic_line(m: ModelPlan, hw: Hardware) -> str:
    if not hw.bandwidth_gbs:
        return "  memory traffic: no bandwidth known for this hardware; the time is compute's"
    return (f"  memory traffic: {m.traffic_bytes / 1e9:,.1f} GB streamed (weights per micro-batch, optimiser states per "
            f"step) at {hw.bandwidth_gbs:g} GB/s: {_time(m.memory_seconds)}; training is {m.bound}-bound, "
            f"estimated {_time(m.seconds)}")


def _serving_line(m: ModelPlan, hw: Hardware) -> str:
    s = m.serving
    return (f"  serving (rows of {s['mean_tokens']:g} tokens, {s['weight_bytes'] / 1e9:.2g} GB of weights): "
            f"~{s['rows_per_second']:,.0f} rows/s at batch {s['batch']} ({s['batch_bound']}-bound); one row "
            f"~{s['latency_ms']:.3g} ms ({s['latency_bound']}-bound)")


def _short(name: str) -> str:
    """A model folder relative to the working directory when it lies under it."""
    try:
        return str(Path(name).resolve().relative_to(Path.cwd())) if Path(name).is_absolute() else name
    except ValueError:
        return name


def format_plan(p: Plan) -> str:
    """The table and per-model details `lorabench plan` prints."""
    hw = p.hardware
    lines = [f"plan for {hw.gpus} x {hw.gpu} ({hw.memory_gb:g} GB, {hw.half_tflops:g} TFLOP/s fp16/bf16, "
             f"{hw.fp32_tflops:g} fp32, {hw.bandwidth_gbs:g} GB/s; {hw.source}) at {hw.utilization:.0%} of peak; MB = "
             "2**20 bytes, per device",
             ""]
    w = max([len("model")] + [len(m.label) for m in p.models])
    head = f"{'model':<{w}} {'total params':>15} {'trainable':>11} {'%':>7}  {'precision':<10} " \
           f"{'tokens/epoch':>12} {'peak MB':>9}  {'fits':<4} {'est. time':>10}"
    lines += [head, "-" * len(head)]
    for m in p.models:
        if m.kind == "baseline":
            lines.append(f"{m.label:<{w}} baseline, no GPU")
            continue
        if m.error:
            lines.append(f"{m.label:<{w}} cannot plan: {m.error}")
            continue
        prec = m.precision["quantization"] or {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[m.precision["weights"]]
        if m.precision["autocast"] and m.precision["weights"] == "float32":
            prec += f"+{m.precision['autocast']}"
        lines.append(f"{m.label:<{w}} {m.total_params:>15,} {m.trainable_params:>11,} {m.trainable_pct:>6.3f}%  "
                     f"{prec:<10} {m.tokens['train_padded_per_epoch']:>12,} {_mb(m.memory.total_mb):>9}  "
                     f"{'yes' if m.fits else 'NO':<4} {m.seconds:>8,.{0 if m.seconds >= 10 else 1}f} s")
    for m in p.models:
        if m.kind == "baseline" or m.error:
            continue
        mem, tk, pr = m.memory, m.tokens, m.precision
        est = "" if tk["source"] == "tokenizer" else f" ({tk['source'].removeprefix('tokenizer; ')})"
        ckpt_on = mem.activations_mb <= mem.activations_other_mb
        lines += ["", f"{m.label} ({_short(m.name)})",
                  f"  {m.method}; trainable {m.trainable_params:,} of {m.total_params:,} ({m.trainable_pct:.3f}%); "
                  f"weights {pr['weights']}{', ' + pr['quantization'] if pr['quantization'] else ''}, "
                  f"trained in {pr['trainable']}, autocast {pr['autocast'] or 'off'}; {m.parallel}",
                  f"  tokens{est}: train {tk['train_rows']} rows, mean {tk['mean']:g}, longest {tk['longest']} "
                  f"(max_length {tk['max_length']}); padded per epoch: train {tk['train_padded_per_epoch']:,} "
                  f"({tk['batching']} of {tk['batch_size']}), val {tk['val_padded_per_epoch']:,}",
                  f"  memory per device (MB): weights {_mb(mem.weights_mb)} + trainable {_mb(mem.trainable_mb)} + "
                  f"gradients {_mb(mem.gradients_mb)} + optimizer {_mb(mem.optimizer_mb)} + activations "
                  f"{_mb(mem.activations_mb)} (gradient checkpointing {'on' if ckpt_on else 'off'}; "
                  f"{'off' if ckpt_on else 'on'}: {_mb(mem.activations_other_mb)}) + CUDA overhead "
                  f"{_mb(mem.overhead_mb)} = {_mb(mem.total_mb)}",
                  f"  compute: {m.flops_per_epoch:.3g} FLOP per epoch (train {m.train_flops_per_epoch:.3g} + val "
                  f"{m.val_flops_per_epoch:.3g}) x {m.epochs:g} epoch{'' if m.epochs == 1 else 's'} = {m.flops:.3g} FLOP; at {m.tflops_used:g} "
                  f"TFLOP/s x {hw.utilization:g}: {_time(m.compute_seconds)}",
                  _traffic_line(m, hw),
                  *([_serving_line(m, hw)] if m.serving else []),
                  f"  {_fit_line(m, hw)}"]
    if any(m.kind != "baseline" and not m.error and not m.tokens["source"].startswith("tokenizer") for m in p.models):
        lines += ["", "Token lengths marked 'estimated' come from characters (no tokenizer at hand); real "
                      "subword tokenizers count more tokens on tweets (URLs, hashtags)."]
    lines += ["", f"Assumptions: utilisation {DEFAULT_UTILIZATION_WHY}; activations per Korthikanti et al. 2022 "
                  f"(arXiv:2205.05198); CUDA overhead {0 if hw.cpu else CUDA_OVERHEAD_MB} MB per device; 4-bit "
                  f"{NF4_BYTES:.3f} bytes per quantized weight (QLoRA); serving has no fixed cost per forward pass "
                  "(kernel launches, Python, tokenising), so for small models (tens of millions of weights or less) "
                  "its rows/s and latency are far too optimistic. Estimates, not measurements."]
    return "\n".join(lines)
