"""Typed, validated configuration: one frozen dataclass per pipeline step.

Each field carries its help text in `metadata["help"]` (`lorabench keys` prints them); validation
lives in `__post_init__` and raises `ConfigError` naming the key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from lorabench.config.loading import from_dict
from lorabench.errors import ConfigError


def _f(default: Any = dataclasses.MISSING, help: str = "", **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


# --------------------------------------------------------------------------- steps
@dataclass(frozen=True)
class DataConfig:
    source: str = _f("disaster_tweets", help=(
        "`disaster_tweets` (bundled Kaggle data), a CSV/JSON/JSONL/Parquet file, a folder "
        "written by datasets.save_to_disk, or a hub dataset id. Relative paths resolve "
        "against the config file."))
    text: str = _f("text", help="A column name, or a template over columns such as '{keyword} | {text}'.")
    label: str = _f("target", help="The label column (integer or string labels).")
    label_names: list[str] | None = _f(None, help="Names for the label ids, in id order (optional).")
    val: str | None = _f(None, help="Explicit validation file; default: the study's 80/20 split of `source`.")
    test: str | None = _f(None, help="Explicit test file; scored when it has labels.")
    train_size: float = _f(0.8, help="Share of `source` rows kept for training when `val` is not given.")
    split_seed: int = _f(42, help="Seed of the train/val split (the study used 42).")
    class_weights: Union[Literal["balanced", "none"], list[float]] = _f("balanced", help=(
        "`balanced` = n / (k * count[c]) over the train split, `none`, or an explicit list in "
        "label-id order (the study's published [0.8766697374481806, 1.1637114032405993])."))
    max_train_samples: int | None = _f(None, help="Seeded subsample of the train split, for quick runs.")
    max_eval_samples: int | None = _f(None, help="Seeded subsample of val and test, for quick runs.")
    sample_seed: int = _f(0, help="Seed of the subsamples.")
    encoding: str = _f("utf-8", help=(
        "Text encoding of CSV/TSV/JSON files, e.g. latin-1 or cp1252 (Kaggle's crowd-labelled original)."))
    delimiter: str | None = _f(None, help="CSV delimiter; default: detected among `,` `;` tab `|`.")
    positive_label: str | int | None = _f(None, help=(
        "Binary tasks: the label value that binary F1, precision, recall and the threshold are about; "
        "default: the value that sorts last (1 of 0/1)."))

    def __post_init__(self) -> None:
        import codecs
        try:
            codecs.lookup(self.encoding)
        except LookupError as e:
            raise ConfigError(f"data.encoding: unknown encoding {self.encoding!r} (e.g. utf-8, latin-1, cp1252)") from e
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ConfigError(f"data.delimiter must be one character, got {self.delimiter!r}")
        if not 0.0 < self.train_size < 1.0:
            raise ConfigError(f"data.train_size must be in (0, 1), got {self.train_size}")
        for key in ("max_train_samples", "max_eval_samples"):
            v = getattr(self, key)
            if v is not None and v < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {v}")
        if isinstance(self.class_weights, list) and any(w <= 0 for w in self.class_weights):
            raise ConfigError(f"data.class_weights must be positive, got {self.class_weights}")


@dataclass(frozen=True)
class ModelConfig:
    name: str = _f("minilm-l6", help=(
        "A built-in name (see `lorabench models`), a hub id, a local folder, or a .gguf file."))
    max_length: int = _f(512, help="Truncation length in tokens (the study: 512).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f("auto", help=(
        "Weights dtype: `auto` = float32 on CPU, bfloat16 on GPUs that support it."))
    trust_remote_code: bool = _f(False, help="Run model code from the hub. Off unless you ask.")
    use_safetensors: bool = _f(True, help=(
        "Load weights from safetensors only. `false` also allows pickle (.bin) checkpoints, which can run "
        "code when loaded: only for checkpoints you trust."))
    gguf_file: str | None = _f(None, help="GGUF file name inside the `name` folder (optional).")
    kind: Literal["transformer", "tfidf-logreg"] = _f("transformer", help=(
        "`transformer`, or the scikit-learn baseline `tfidf-logreg` (set automatically by that name)."))
    quantization: Literal["none", "4bit", "8bit"] = _f("none", help=(
        "QLoRA: load the frozen weights through bitsandbytes, `4bit` (NF4, double quantization, compute in "
        "the run's precision) or `8bit` (LLM.int8); the head and LoRA stay full precision. LoRA only."))
    device_map: Union[Literal["auto", "balanced", "balanced_low_0", "sequential"], dict, None] = _f(None, help=(
        "Model parallel (the study's): spread one model's layers over the GPUs of this machine, as in "
        "from_pretrained(device_map=...). `auto` fills the GPUs in turn; a dict maps module names to devices. "
        "Not with data parallel (several processes)."))
    max_memory: dict | None = _f(None, help=(
        "With device_map: the most each device may hold, e.g. {0: 20GiB, 1: 20GiB, cpu: 60GiB}."))

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ConfigError(f"model.max_length must be >= 2, got {self.max_length}")
        if self.max_memory is not None and self.device_map is None:
            raise ConfigError("model.max_memory applies with model.device_map only; set model.device_map: auto")
        if self.max_memory is not None:
            import re
            for dev, amount in self.max_memory.items():
                if not (isinstance(dev, int) or str(dev) in ("cpu", "disk") or str(dev).isdigit()):
                    raise ConfigError(f"model.max_memory: device {dev!r} is not a GPU index, cpu or disk")
                if not (isinstance(amount, int) or re.fullmatch(r"\s*\d+(\.\d+)?\s*[KMGT]i?B\s*", str(amount), re.I)):
                    raise ConfigError(f"model.max_memory[{dev!r}]: {amount!r} is not an amount such as 20GiB or 24GB")
        if self.name == "tfidf-logreg" and self.kind != "tfidf-logreg":
            object.__setattr__(self, "kind", "tfidf-logreg")


@dataclass(frozen=True)
class LoraConfig:
    r: int = _f(8, help="LoRA rank.")
    alpha: int = _f(16, help="LoRA alpha (scaling = alpha / r).")
    dropout: float = _f(0.1, help="Dropout on the LoRA input.")
    bias: Literal["none", "all", "lora_only"] = _f("none", help="Which biases to train.")
    target_modules: list[str] | None = _f(None, help="Module names to adapt; default from the architecture table.")

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora.r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = _f(4e-4, help=(
        "Peak learning rate; the study's 1e-4 at batch 8, scaled with the batch (same rate per sample)."))
    lr_scheduler: str = _f("constant_with_warmup", help="Any transformers scheduler name (the study: constant with warmup).")
    warmup_ratio: float = _f(0.1, help="Share of steps for warmup.")
    max_grad_norm: float = _f(0.3, help="Gradient clipping (the study: 0.3).")
    batch_size: int = _f(32, help=(
        "Per-device train batch size (the study: 8; 32 trains ~1.2x faster per sample on CPU for MiniLM, see BENCHMARKS.md)."))
    eval_batch_size: int | None = _f(None, help=(
        "Per-device eval batch size; default batch_size (a 135M decoder on 2 CPU cores scores fastest at ~8)."))
    gradient_accumulation_steps: int = _f(1, help="Micro-batches per optimiser step.")
    epochs: float = _f(5, help="Training epochs (the study: 5).")
    max_steps: int | None = _f(None, help="Stop after this many optimiser steps (overrides epochs).")
    weight_decay: float = _f(0.001, help="AdamW weight decay (the study: 0.001).")
    seed: int = _f(42, help="Seed for initialisation and data order.")
    early_stopping_patience: int | None = _f(None, help="Stop after this many evaluations without improvement.")
    metric_for_best_model: str = _f("f1", help="Val metric that picks the best epoch.")
    gradient_checkpointing: bool = _f(False, help=(
        "Trade compute for memory. Off by default: it costs ~1.9x time on CPU and changes no result."))
    group_by_length: bool = _f(True, help=(
        "Tight length buckets: rows sorted by length (ties shuffled), batches shuffled each epoch; "
        "~2% padded tokens vs ~34% for random batches (BENCHMARKS.md)."))
    pooled_only_last_layer: bool = _f(True, help=(
        "Encoders whose head reads the first token (BERT, RoBERTa, ELECTRA, XLM-R, CamemBERT): the "
        "last layer computes that token only (keys and values still from every token); same logits, "
        "1/L less layer work for L layers."))
    fast_dropout: bool = _f(True, help=(
        "CPU: draw dropout masks with numpy's SFC64 generator (same keep probability, ~8x faster "
        "than torch's CPU dropout); no effect on GPU."))
    torch_compile: bool = _f(False, help=(
        "Passed to the Trainer. Off: on a 2-core CPU compiling took ~3 min and trained no faster (BENCHMARKS.md)."))
    report_to: str | list[str] = _f("none", help="Passed to the Trainer: none, wandb, tensorboard...")
    logging_steps: int = _f(50, help="Log the training loss every N steps.")
    dataloader_num_workers: int = _f(0, help="DataLoader workers.")
    threshold: float | Literal["tune"] = _f(0.5, help=(
        "Binary decision threshold on P(positive); `tune` picks the F1-best one on val."))

    def __post_init__(self) -> None:
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train.max_steps must be >= 1 (or null for epochs), got {self.max_steps}")
        for key in ("batch_size", "gradient_accumulation_steps", "logging_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        if self.epochs <= 0:
            raise ConfigError(f"train.epochs must be > 0, got {self.epochs}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if isinstance(self.threshold, float) and not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"train.threshold must be in (0, 1) or 'tune', got {self.threshold}")
        if self.metric_for_best_model not in ("f1", "precision", "recall", "accuracy", "loss"):
            raise ConfigError(f"train.metric_for_best_model: expected f1, precision, recall, accuracy or loss, "
                              f"got {self.metric_for_best_model!r}")
        from transformers import SchedulerType
        names = [t.value for t in SchedulerType]
        if self.lr_scheduler not in names:
            raise ConfigError(f"train.lr_scheduler: unknown scheduler {self.lr_scheduler!r} (one of {', '.join(names)})")
        import importlib.util
        for target in [self.report_to] if isinstance(self.report_to, str) else self.report_to:
            if target not in ("none", "all") and importlib.util.find_spec(target) is None:
                raise ConfigError(f"train.report_to: {target!r} is not installed (pip install {target})")


@dataclass(frozen=True)
class ExperimentConfig:
    """One model trained on one split: what `lorabench train` runs."""
    name: str = _f("experiment", help="Experiment name; runs go to runs/<name>/.")
    data: DataConfig = _f(DataConfig(), help="Data source, split and class weights.")
    model: ModelConfig = _f(ModelConfig(), help="Which pretrained model and how to load it.")
    lora: LoraConfig | None = _f(LoraConfig(), help="LoRA settings; null = full fine-tuning.")
    train: TrainConfig = _f(TrainConfig(), help="Trainer settings (defaults: the study's, but batch 32 / lr 4e-4 and no checkpointing).")
    label: str | None = _f(None, help="Display name in reports (default: the model name).")

    def __post_init__(self) -> None:
        if self.model.quantization != "none" and self.lora is None and self.model.kind == "transformer":
            raise ConfigError(f"model.quantization: {self.model.quantization} freezes the quantized weights, so it "
                              "needs LoRA; full fine-tuning (lora: null) cannot train them")


@dataclass(frozen=True)
class ModelEntry:
    """One `models:` entry of a comparison: a model plus its own overrides."""
    name: str = _f(help="Model name, as in model.name.")
    label: str | None = _f(None, help="Display name in the report.")
    model: dict | None = _f(None, help="Overrides of the model section (max_length, dtype...).")
    lora: dict | None = _f(None, help="Overrides of the shared lora section (use full_finetune: true for no LoRA).")
    train: dict | None = _f(None, help="Overrides of the shared train section.")
    full_finetune: bool = _f(False, help="Train all weights instead of LoRA.")
    max_train_samples: int | None = _f(None, help=(
        "Train this model on a seeded subsample of the shared train split (val and test stay identical)."))


@dataclass(frozen=True)
class CompareConfig:
    """Several models on one split: what `lorabench compare` runs."""
    name: str = _f("compare", help="Comparison name; runs go to runs/<name>/.")
    data: DataConfig = _f(DataConfig(), help="Shared data section: every model sees this split.")
    model: dict = _f({}, help="Shared model settings (max_length, dtype...) under each entry's own.")
    lora: LoraConfig | None = _f(LoraConfig(), help="Shared LoRA settings.")
    train: TrainConfig = _f(TrainConfig(), help="Shared Trainer settings.")
    models: list[ModelEntry] = _f([], help="The models to compare.")
    seeds: list[int] = _f([42], help="Each model is trained once per seed; the report shows mean ± std.")
    notes: str | None = _f(None, help="Free text shown at the top of the report.")

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("models: a comparison needs at least one entry")
        labels = [m.label or m.name for m in self.models]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ConfigError(f"models: duplicate label {dup[0]!r}; give each entry a distinct `label`")
        if not self.seeds:
            raise ConfigError("seeds: give at least one seed")

    def experiments(self) -> list[ExperimentConfig]:
        """The resolved experiment of every (model, seed), in report order."""
        out = []
        for entry in self.models:
            for seed in self.seeds:
                out.append(self.experiment(entry, seed))
        return out

    def experiment(self, entry: ModelEntry, seed: int) -> ExperimentConfig:
        model = {**self.model, **(entry.model or {}), "name": entry.name}
        train = {**dataclasses.asdict(self.train), **(entry.train or {}), "seed": seed}
        if entry.full_finetune or self.lora is None:
            lora = None
        else:
            lora = from_dict(LoraConfig, {**dataclasses.asdict(self.lora), **(entry.lora or {})}, "lora")
        data = self.data
        if entry.max_train_samples is not None:
            data = dataclasses.replace(data, max_train_samples=entry.max_train_samples)
        return ExperimentConfig(
            name=self.name,
            data=data,
            model=from_dict(ModelConfig, model, f"models[{entry.label or entry.name}].model"),
            lora=lora,
            train=from_dict(TrainConfig, train, f"models[{entry.label or entry.name}].train"),
            label=entry.label or entry.name,
        )


@dataclass(frozen=True)
class SweepMetric:
    name: str = _f("f1", help="Val metric to optimise: f1, precision, recall, accuracy (W&B's `eval/f1-score` = f1).")
    goal: Literal["maximize", "minimize"] = _f("maximize", help="maximize or minimize.")


@dataclass(frozen=True)
class SweepSection:
    """The `sweep:` section; W&B sweep files are accepted as written."""
    method: Literal["bayes", "random", "grid"] = _f("bayes", help="bayes = Optuna TPE; random; grid.")
    metric: SweepMetric = _f(SweepMetric(), help="What to optimise.")
    parameters: dict = _f({}, help=(
        "Search space in W&B form: `value`, `values`, or `distribution` (uniform, log_uniform_values, "
        "int_uniform, q_uniform, categorical, log_uniform) with min/max (q). Names: the study's lora_rank, "
        "lora_alpha, lora_dropout, lora_bias, learning_rate, max_length... or dotted config keys."))
    run_cap: int | None = _f(None, help="Trials to run (W&B's name).")
    trials: int | None = _f(None, help="Trials to run (same as run_cap; --trials overrides both).")
    pruner: Literal["median", "hyperband", "none"] = _f("median", help="Stop unpromising trials early.")
    seed: int = _f(0, help="Sampler seed.")
    heartbeat_seconds: int = _f(30, help="A trial whose worker is silent this long (x2) is marked failed and retried.")
    max_retries: int = _f(2, help="Retries of a trial whose worker died.")
    name: str | None = _f(None, help="W&B's sweep name (informational).")
    program: str | None = _f(None, help="W&B's training script (ignored: lorabench trains).")
    command: list | None = _f(None, help="W&B's command (ignored).")
    early_terminate: dict | None = _f(None, help="W&B's early termination: any value switches on hyperband.")
    project: str | None = _f(None, help="W&B project (ignored).")
    entity: str | None = _f(None, help="W&B entity (ignored).")
    description: str | None = _f(None, help="Free text.")

    def __post_init__(self) -> None:
        if not self.parameters:
            raise ConfigError("sweep.parameters: give at least one parameter to search")
        n = self.n_trials
        if n is not None and n < 1:
            raise ConfigError(f"sweep.run_cap must be >= 1, got {n}")

    @property
    def n_trials(self) -> int | None:
        return self.trials if self.trials is not None else self.run_cap


@dataclass(frozen=True)
class SweepConfig(ExperimentConfig):
    """One model, many hyperparameter settings: what `lorabench sweep` runs (an experiment + `sweep:`)."""
    sweep: SweepSection | None = _f(None, help="The search space and objective (required).")

    def __post_init__(self) -> None:
        if self.sweep is None:
            raise ConfigError("missing key 'sweep' (the search space and objective)")

    def base(self) -> ExperimentConfig:
        return ExperimentConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ExperimentConfig)})
