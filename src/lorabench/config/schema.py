"""Typed, validated configuration: one frozen pydantic dataclass per pipeline step.

Each field's help text is its `Field(description=...)` (`lorabench keys` prints them). Types are checked
by pydantic; the lossless conversions a YAML file needs (`1e-4` read as a string, `2.0` for a count, a
number for a string) are the `Int`/`Float`/`Str` types below, and the checks across values are
`model_validator`s. A failure is a `ConfigError` naming the key (`loading.config_error`).
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, dataclass_transform

from pydantic import BeforeValidator, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from lorabench.config.loading import config_error, from_dict, to_dict
from lorabench.config.tasks import METRICS as TASK_METRICS
from lorabench.config.tasks import resolve_metric
from lorabench.errors import ConfigError


def _integral(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _number(v: Any) -> Any:
    if isinstance(v, str):  # YAML reads 1e-4 (no dot) as a string
        try:
            return float(v)
        except ValueError:
            pass
    return v


def _text(v: Any) -> Any:
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


# strict: no bool for a number, no "3" for a count, no 1 for true; plus the lossless conversions above
Int = Annotated[int, Strict(), BeforeValidator(_integral)]
Float = Annotated[float, Strict(), BeforeValidator(_number)]
Str = Annotated[str, Strict(), BeforeValidator(_text)]
Bool = Annotated[bool, Strict()]
_T = TypeVar("_T")
Section = Annotated[_T, BeforeValidator(lambda v: {} if v is None else v)]  # `train:` left empty: the defaults


def _f(default: Any = dataclasses.MISSING, help: str = "", **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        value = default
        return Field(default_factory=lambda: type(value)(value), description=help, **kw)
    if default is dataclasses.MISSING:
        return Field(description=help, **kw)
    return Field(default, description=help, **kw)


def _either(default: Any, help: str) -> Any:
    """A field of several types, tried in the order written (`1` for `str | int` is the string '1')."""
    return _f(default, help, union_mode="left_to_right")


def _bad(message: str) -> PydanticCustomError:
    """A failed check; `{key.name}` in `message` becomes that key's path, e.g. `train.batch_size`."""
    return PydanticCustomError("lorabench", "{message}", {"message": message})


@dataclass_transform(frozen_default=True, field_specifiers=(Field,))
def _config(key: str = ""):
    """A frozen pydantic dataclass; building one by hand (or `dataclasses.replace`) raises `ConfigError`
    naming `key.<field>`, as reading one from a file does."""
    def wrap(cls: type) -> type:
        cls = dataclass(frozen=True, config=ConfigDict(extra="forbid"))(cls)
        init, names = cls.__init__, [f.name for f in dataclasses.fields(cls)]

        @functools.wraps(init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs = {**dict(zip(names, args)), **kwargs}
            try:
                init(self, **kwargs)
            except ValidationError as e:
                raise config_error(e, type(self), kwargs, key) from e
        cls.__init__ = __init__
        return cls
    return wrap


# --------------------------------------------------------------------------- steps
_DEFAULT_TRAIN_SIZE, _DEFAULT_SPLIT_SEED = 0.8, 42  # the study's split (data.train_size, data.split_seed)


@_config("data")
class DataConfig:
    source: Str = _f("disaster_tweets", help=(
        "`disaster_tweets` (bundled Kaggle data), a CSV/JSON/JSONL/Parquet file, a folder "
        "written by datasets.save_to_disk, or a hub dataset id. Relative paths resolve "
        "against the config file."))
    text: Str = _f("text", help="A column name, or a template over columns such as '{keyword} | {text}'.")
    task: Literal["single_label", "multi_label", "regression"] | None = _f(None, help=(
        "`single_label` (one class per text), `multi_label` (a set of labels per text: a sigmoid per label) or "
        "`regression` (a number per text); default: multi_label when the labels are lists, data.label names several "
        "columns or data.label_separator is set, else single_label (lorabench data says which)."))
    label: Union[Str, list[Str]] = _either("target", help=(
        "The label column (integer or string labels; a number for regression; for multi_label a list per row, "
        "or a string split at data.label_separator), or a list of 0/1 columns, one per label (multi_label)."))
    label_separator: Str | None = _f(None, help=(
        "multi_label: the labels of a row are one string split at this separator, e.g. `|` in 'fire|flood'."))
    label_names: list[Str] | None = _f(None, help="Names for the label ids, in id order (optional).")
    val: Str | None = _f(None, help="Explicit validation file; default: the study's 80/20 split of `source`.")
    test: Str | None = _f(None, help="Explicit test file; scored when it has labels.")
    train_size: Float = _f(_DEFAULT_TRAIN_SIZE, help=(
        "Share of `source` rows kept for training when `val` is not given."))
    split_seed: Int = _f(_DEFAULT_SPLIT_SEED, help=(
        "Seed of the train/val split (the study used 42) and of the k-fold split."))
    folds: Int | None = _f(None, help=(
        "k-fold estimates: split the labelled rows of `source` (file order) into this many stratified folds "
        "(scikit-learn StratifiedKFold, shuffled with split_seed; multi_label: iterative stratification; regression: "
        "on quantile bins of the target), identical for every model; each fold is val once. `compare` and `train` "
        "run every fold; train_size is unused. Not with `val`."))
    fold: Int | None = _f(None, help=(
        "With `folds`: which fold is val (1-based, 1..folds), the others train. Set per run by compare/train."))
    class_weights: Union[Literal["balanced", "none"], list[Float]] = _either("balanced", help=(
        "`balanced` = n / (k * count[c]) over the train split, `none`, or an explicit list in "
        "label-id order (the study's published [0.8766697374481806, 1.1637114032405993]). multi_label: each label's "
        "positive weight in the binary cross-entropy (`balanced` = its negatives / positives in train). Unused for "
        "regression."))
    max_train_samples: Int | None = _f(None, help="Seeded subsample of the train split, for quick runs.")
    max_eval_samples: Int | None = _f(None, help="Seeded subsample of val and test, for quick runs.")
    sample_seed: Int = _f(0, help="Seed of the subsamples.")
    long_text: Literal["truncate", "head_tail", "chunk"] = _f("truncate", help=(
        "Texts longer than model.max_length tokens: `truncate` keeps the first tokens (the study's rule); `head_tail` "
        "the first quarter and the last three quarters of the window (Sun et al. 2019); `chunk` reads every window "
        "(consecutive windows share data.stride tokens), trains on each with its text's label and averages the "
        "windows' probabilities per text in evaluation and predict, so metrics stay one per text."))
    stride: Int = _f(0, help=(
        "With long_text: chunk, the tokens consecutive windows share (0: none); below the window's text tokens."))
    encoding: Str = _f("utf-8", help=(
        "Text encoding of CSV/TSV/JSON files, e.g. latin-1 or cp1252 (Kaggle's crowd-labelled original)."))
    delimiter: Str | None = _f(None, help="CSV delimiter; default: detected among `,` `;` tab `|`.")
    positive_label: Str | Int | None = _either(None, help=(
        "Binary tasks: the label value that binary F1, precision, recall and the threshold are about; "
        "default: the value that sorts last (1 of 0/1)."))

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        import codecs
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise _bad(f"{{key.encoding}}: unknown encoding {self.encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
        if self.stride < 0:
            raise _bad(f"{{key.stride}} must be 0 or more, got {self.stride}")
        if self.stride and self.long_text != "chunk":
            raise _bad(f"{{key.stride}} is the overlap of long_text: chunk's windows; long_text is {self.long_text!r}, "
                       f"so {self.stride} would not be used: set long_text: chunk or leave stride out")
        implied = "multi_label" if isinstance(self.label, list) or self.label_separator is not None else None
        if implied and self.task not in (None, "multi_label"):
            why = "names several label columns" if isinstance(self.label, list) else "label_separator is set"
            raise _bad(f"{{key.task}} is {self.task}, but {why}: that is a multi_label task; set task: multi_label")
        if isinstance(self.label, list) and (len(self.label) < 2 or len(set(self.label)) != len(self.label)):
            raise _bad(f"{{key.label}}: a list of label columns needs at least 2 distinct names, got {self.label}")
        if isinstance(self.label, list) and self.label_separator is not None:
            raise _bad("{key.label_separator} splits one label column; data.label names one 0/1 column per label")
        if self.label_separator == "":
            raise _bad("{key.label_separator} must not be empty")
        if self.positive_label is not None and (self.task or implied) not in (None, "single_label"):
            raise _bad(f"{{key.positive_label}} applies to single-label binary tasks; this task is {self.task or implied}")
        if self.task == "regression" and isinstance(self.class_weights, list):
            raise _bad("{key.class_weights} weighs classes; a regression target has none: leave it out")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise _bad(f"{{key.delimiter}} must be one character, got {self.delimiter!r}")
        if not 0.0 < self.train_size < 1.0:
            raise _bad(f"{{key.train_size}} must be in (0, 1), got {self.train_size}")
        for key in ("max_train_samples", "max_eval_samples"):
            v = getattr(self, key)
            if v is not None and v < 1:
                raise _bad(f"{{key.{key}}} must be >= 1, got {v}")
        if isinstance(self.class_weights, list) and any(w <= 0 for w in self.class_weights):
            raise _bad(f"{{key.class_weights}} must be positive, got {self.class_weights}")
        if self.folds is not None and self.folds < 2:
            raise _bad(f"{{key.folds}} must be >= 2 (or null for one train/val split), got {self.folds}")
        if self.fold is not None and self.folds is None:
            raise _bad("{key.fold} picks one fold of {key.folds}; set {key.folds} too")
        if self.fold is not None and not 1 <= self.fold <= self.folds:
            raise _bad(f"{{key.fold}} must be in 1..{self.folds} (1-based), got {self.fold}")
        if self.folds is not None and self.val:
            raise _bad("{key.folds} splits the rows of {key.source} into folds and cannot be combined with "
                       "{key.val}; put the val rows into the source file")
        unused = ("{key.val} is given" if self.val else "{key.folds} puts every row in a fold") \
            if self.val or self.folds else None
        if unused and self.train_size != _DEFAULT_TRAIN_SIZE:
            raise _bad(f"{{key.train_size}} splits {{key.source}} into train and val; {unused}, so "
                       f"{self.train_size} would not be used: leave it out")
        if self.val and self.split_seed != _DEFAULT_SPLIT_SEED:
            raise _bad(f"{{key.split_seed}} seeds the train/val split of {{key.source}} (and its folds); {{key.val}} is "
                       f"given, so {self.split_seed} would not be used: leave it out")
        return self


@_config("model")
class ModelConfig:
    name: Str = _f("minilm-l6", help=(
        "A built-in name (see `lorabench models`), a hub id, a local folder, or a .gguf file."))
    max_length: Int = _f(512, help="Truncation length in tokens (the study: 512).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f("auto", help=(
        "Weights dtype: `auto` = float32 on CPU, bfloat16 on GPUs that support it."))
    trust_remote_code: Bool = _f(False, help="Run model code from the hub. Off unless you ask.")
    trust_hub_kernels: Bool = _f(False, help=(
        "Let bitsandbytes and transformers fetch and run compiled kernels from the Hugging Face Hub (the `kernels` "
        "package: bitsandbytes' CPU 4-bit kernel, transformers' `use_kernels` layers). Off unless you ask: "
        "bitsandbytes then uses its own code and the model its plain PyTorch layers."))
    use_safetensors: Bool = _f(True, help=(
        "Load weights from safetensors only. `false` also allows pickle (.bin) checkpoints, which can run "
        "code when loaded: only for checkpoints you trust."))
    gguf_file: Str | None = _f(None, help="GGUF file name inside the `name` folder (optional).")
    kind: Literal["transformer", "tfidf-logreg"] | None = _f(None, validate_default=True, help=(
        "`transformer`, or the scikit-learn baseline `tfidf-logreg`; set from model.name (null: tfidf-logreg for "
        "that name, transformer for any other)."))
    quantization: Literal["none", "4bit", "8bit"] = _f("none", help=(
        "QLoRA: load the frozen weights through bitsandbytes, `4bit` (NF4, double quantization, compute in "
        "the run's precision) or `8bit` (LLM.int8); the head and LoRA stay full precision. LoRA only."))
    device_map: Union[Literal["auto", "balanced", "balanced_low_0", "sequential"], dict, None] = _either(None, help=(
        "Model parallel (the study's): spread one model's layers over the GPUs of this machine, as in "
        "from_pretrained(device_map=...). `auto` fills the GPUs in turn; a dict maps module names to devices. "
        "Not with data parallel (several processes)."))
    max_memory: dict | None = _f(None, help=(
        "With device_map: the most each device may hold, e.g. {0: 20GiB, 1: 20GiB, cpu: 60GiB}."))

    @field_validator("kind")
    @classmethod
    def _baseline_by_name(cls, kind: str | None, info: Any) -> str:
        by_name = "tfidf-logreg" if info.data.get("name") == "tfidf-logreg" else "transformer"
        if kind is not None and kind != by_name:
            raise _bad(f"{{key}}: {kind!r} contradicts model.name {info.data.get('name')!r} (a {by_name}); "
                       "model.name decides it: leave model.kind out")
        return by_name

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.max_length < 2:
            raise _bad(f"{{key.max_length}} must be >= 2, got {self.max_length}")
        if self.gguf_file and not Path(self.name).expanduser().is_dir():
            raise _bad(f"{{key.gguf_file}} names a file inside the {{key.name}} folder, but {self.name!r} is not a "
                       "folder; set model.name to the folder holding it, or to the .gguf file itself")
        if self.max_memory is not None and self.device_map is None:
            raise _bad("{key.max_memory} applies with {key.device_map} only; set {key.device_map}: auto")
        if self.max_memory is not None:
            import re
            for dev, amount in self.max_memory.items():
                if not (isinstance(dev, int) or str(dev) in ("cpu", "disk") or str(dev).isdigit()):
                    raise _bad(f"{{key.max_memory}}: device {dev!r} is not a GPU index, cpu or disk")
                if not (isinstance(amount, int) or re.fullmatch(r"\s*\d+(\.\d+)?\s*[KMGT]i?B\s*", str(amount), re.I)):
                    raise _bad(f"{{key.max_memory}}[{dev!r}]: {amount!r} is not an amount such as 20GiB or 24GB")
        return self


@_config("lora")
class LoraConfig:
    r: Int = _f(8, help="LoRA rank.")
    alpha: Int = _f(16, help="LoRA alpha (scaling = alpha / r).")
    dropout: Float = _f(0.1, help="Dropout on the LoRA input.")
    bias: Literal["none", "all", "lora_only"] = _f("none", help="Which biases to train.")
    target_modules: list[Str] | None = _f(None, help="Module names to adapt; default from the architecture table.")

    @model_validator(mode="after")
    def _check(self) -> LoraConfig:
        if self.r < 1:
            raise _bad(f"{{key.r}} must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise _bad(f"{{key.dropout}} must be in [0, 1), got {self.dropout}")
        return self


@_config("train")
class TrainConfig:
    learning_rate: Float = _f(4e-4, help=(
        "Peak learning rate at a global batch of 32: the study's 1e-4 at batch 8, scaled with the batch (same rate "
        "per sample). With batch_size auto it is scaled to the global batch picked (x batch x accumulation x "
        "processes / 32); with an integer batch_size used as given."))
    lr_scheduler: Str = _f("constant_with_warmup", help=(
        "A transformers scheduler name; default: constant after a linear warmup. The study's code asked for "
        "`constant` with warmup_ratio 0.1, and transformers' `constant` has no warmup: the study trained at its "
        "peak rate from the first step (examples/study.yaml reproduces that)."))
    warmup_ratio: Float | None = _f(None, help=(
        "Share of the optimiser steps for a linear warmup; default 0.1 where the scheduler warms up, 0 for "
        "`constant`, `reduce_lr_on_plateau` and `greedy` (transformers gives them no warmup, so a ratio there would "
        "not be used and is refused)."))
    max_grad_norm: Float = _f(0.3, help="Gradient clipping (the study: 0.3).")
    batch_size: Int | Literal["auto"] = _either("auto", help=(
        "Per-device train batch size, or `auto`: 32 (~1.2x faster per sample than the study's 8 on CPU), lowered "
        "(not below 8) where an epoch would make fewer than min_steps_per_epoch optimiser steps (BENCHMARKS.md)."))
    min_steps_per_epoch: Int = _f(250, help=(
        "batch_size auto: the fewest optimiser steps an epoch makes before the batch is lowered (small data learns "
        "less per epoch at batch 32: 1500 rows, 1 epoch, val F1 0.751 vs 0.776 at the study's batch 8)."))
    eval_batch_size: Int | None = _f(None, help=(
        "Per-device eval batch size; default batch_size (a 135M decoder on 2 CPU cores scores fastest at ~8)."))
    gradient_accumulation_steps: Int = _f(1, help="Micro-batches per optimiser step.")
    epochs: Float = _f(5, help="Training epochs (the study: 5).")
    max_steps: Int | None = _f(None, help="Stop after this many optimiser steps (overrides epochs).")
    weight_decay: Float = _f(0.001, help="AdamW weight decay (the study: 0.001).")
    seed: Int = _f(42, help="Seed for initialisation and data order.")
    early_stopping_patience: Int | None = _f(None, help="Stop after this many evaluations without improvement.")
    metric_for_best_model: Str | None = _f(None, help=(
        "Val metric that picks the best epoch; default: the task's (f1 single_label, f1_micro multi_label, rmse "
        "regression). Any metric of the task (lorabench.config.tasks.METRICS) or loss."))
    gradient_checkpointing: Bool = _f(False, help=(
        "Trade compute for memory. Off by default: it costs ~1.9x time on CPU and changes no result."))
    group_by_length: Bool | Literal["auto"] = _either("auto", help=(
        "Tight length buckets: rows sorted by length (ties shuffled), batches shuffled each epoch; ~2% padded "
        "tokens vs ~34% for random batches (BENCHMARKS.md). `auto`: on from a global batch of 16 up, else random "
        "batches (buckets of 8 length-alike rows gave a noisier model: val F1 0.752 vs 0.789, 3 seeds)."))
    pooled_only_last_layer: Bool = _f(True, help=(
        "Encoders whose head reads the first token (BERT, RoBERTa, ELECTRA, XLM-R, CamemBERT): the "
        "last layer computes that token only (keys and values still from every token); same logits, "
        "1/L less layer work for L layers."))
    fast_dropout: Bool = _f(True, help=(
        "CPU: draw dropout masks with numpy's SFC64 generator (same keep probability, ~8x faster "
        "than torch's CPU dropout); no effect on GPU."))
    torch_compile: Bool = _f(False, help=(
        "Passed to the Trainer. Off: on a 2-core CPU compiling took ~3 min and trained no faster (BENCHMARKS.md)."))
    report_to: Str | list[Str] = _either("none", help=(
        "Experiment trackers, any subset of [wandb, mlflow, tensorboard, trackio] (`all`: every installed one); "
        "offline by default (docs/trackers.md)."))
    logging_steps: Int = _f(50, help="Log the training loss every N steps.")
    dataloader_num_workers: Int = _f(0, help="DataLoader workers.")
    threshold: Float | Literal["tune"] = _either(0.5, help=(
        "Binary decision threshold on P(positive); `tune` picks the F1-best one on val. multi_label: the threshold "
        "of every label, or `tune`: each label's own F1-best threshold on val."))
    regression_loss: Literal["mse", "huber"] = _f("mse", help=(
        "regression: the training loss, mean squared error or Huber (delta 1: squared below 1, linear above; less "
        "pulled by outlying targets)."))
    calibration: Literal["none", "temperature"] = _f("none", help=(
        "`temperature`: after training, fit temperature scaling on val (one T minimising val log loss; Guo et al. "
        "2017) and use the calibrated probabilities everywhere after: saved predictions, test metrics, a tuned "
        "threshold (tuned after it), predict and the ensemble. The most probable class of a row does not change; "
        "run.json `calibration` has T and the val log loss before and after."))
    serving_cost: Bool = _f(True, help=(
        "After training, measure what predicting with the model costs, in a fresh process as `predict` runs it: "
        "rows/s on up to 128 val rows, median latency of one row, peak memory, and the size `export --merge` "
        "would write (run.json `serving`; a few seconds per run)."))

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.max_steps is not None and self.max_steps < 1:
            raise _bad(f"{{key.max_steps}} must be >= 1 (or null for epochs), got {self.max_steps}")
        for key in ("batch_size", "gradient_accumulation_steps", "logging_steps", "min_steps_per_epoch"):
            if getattr(self, key) != "auto" and getattr(self, key) < 1:
                raise _bad(f"{{key.{key}}} must be >= 1, got {getattr(self, key)}")
        if self.learning_rate <= 0:
            raise _bad(f"{{key.learning_rate}} must be > 0, got {self.learning_rate}")
        if self.epochs <= 0:
            raise _bad(f"{{key.epochs}} must be > 0, got {self.epochs}")
        if self.warmup_ratio is None:  # the default for this scheduler, recorded as the value used
            object.__setattr__(self, "warmup_ratio", 0.0 if self.lr_scheduler in NO_WARMUP else _DEFAULT_WARMUP)
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise _bad(f"{{key.warmup_ratio}} must be in [0, 1), got {self.warmup_ratio}")
        if self.lr_scheduler in NO_WARMUP and self.warmup_ratio > 0:
            raise _bad(f"{{key.warmup_ratio}}: transformers' {self.lr_scheduler!r} schedule has no warmup, so "
                       f"{self.warmup_ratio} would not be used; use lr_scheduler: constant_with_warmup for a warmup, "
                       "or leave warmup_ratio out")
        if isinstance(self.threshold, float) and not 0.0 < self.threshold < 1.0:
            raise _bad(f"{{key.threshold}} must be in (0, 1) or 'tune', got {self.threshold}")
        known = {"loss", *(m for ms in TASK_METRICS.values() for m in ms)}
        if self.metric_for_best_model is not None and self.metric_for_best_model not in known:
            raise _bad(f"{{key.metric_for_best_model}}: unknown metric {self.metric_for_best_model!r} (f1, precision, "
                       "recall, accuracy; f1_micro, f1_macro, ... for multi_label; rmse, mae, r2, ... for regression; "
                       "or loss)")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise _bad(f"{{key.lr_scheduler}}: unknown scheduler {self.lr_scheduler!r} (one of {', '.join(LR_SCHEDULERS)})")
        for target in [self.report_to] if isinstance(self.report_to, str) else self.report_to:
            if target not in ("none", "all") and target not in TRACKERS:
                raise _bad(f"{{key.report_to}}: unknown tracker {target!r} (lorabench's: {', '.join(TRACKERS)}; "
                           "or all, none)")
            if target not in ("none", "all") and not _installed(target):
                raise _bad(f"{{key.report_to}}: {target!r} is not installed (pip install 'lorabench[tracking]', "
                           f"or pip install {_TRACKER_PACKAGES.get(target, target)})")
        return self


TRACKERS = ("wandb", "mlflow", "tensorboard", "trackio")  # lorabench.tracking has a backend for each
_TRACKER_PACKAGES = {"mlflow": "mlflow-skinny"}

# transformers' scheduler names (`transformers.SchedulerType`, 5.25), kept here so that a config is checked without
# importing torch and transformers; tests/test_config.py fails if one of them leaves transformers.
NO_WARMUP = ("constant", "reduce_lr_on_plateau", "greedy")  # transformers.get_scheduler passes them no warmup
_DEFAULT_WARMUP = 0.1  # the study's warmup_ratio, where the schedule has one
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                 "warmup_stable_decay", "greedy")


def _installed(module: str) -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # '0.5' (no package '0'), '' or '.x'
        return False


@_config()
class ExperimentConfig:
    """One model trained on one split: what `lorabench train` runs."""
    name: Str = _f("experiment", help="Experiment name; runs go to runs/<name>/.")
    data: Section[DataConfig] = _f(DataConfig(), help="Data source, split and class weights.")
    model: Section[ModelConfig] = _f(ModelConfig(), help="Which pretrained model and how to load it.")
    lora: LoraConfig | None = _f(LoraConfig(), help="LoRA settings; null = full fine-tuning.")
    train: Section[TrainConfig] = _f(TrainConfig(), help="Trainer settings (defaults: the study's, but batch 32 / lr 4e-4 and no checkpointing).")
    label: Str | None = _f(None, help="Display name in reports (default: the model name).")

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if self.model.kind == "transformer" and self.data.stride and self.data.stride >= self.model.max_length - 1:
            raise _bad(f"{{key.data.stride}} {self.data.stride} leaves no new tokens in a window of model.max_length "
                       f"{self.model.max_length}: use a stride below {self.model.max_length - 1}")
        task = self.data.task or ("multi_label" if isinstance(self.data.label, list) or self.data.label_separator
                                  else None)
        problem = task_problem(self, task) if task is not None else None
        if problem:
            raise _bad(problem)
        if self.model.quantization != "none" and self.lora is None and self.model.kind == "transformer":
            raise _bad(f"{{key.model.quantization}}: {self.model.quantization} freezes the quantized weights, so it "
                       "needs LoRA; full fine-tuning (lora: null) cannot train them")
        return self


def task_problem(cfg: ExperimentConfig, task: str) -> str | None:
    """What in `cfg` does not fit `task` (known from the config, or once the data is read), as a one-line message
    naming the key, or None: a metric of another task, a decision threshold for regression, calibration outside
    single_label, a regression loss for classification."""
    t = cfg.train
    try:
        resolve_metric(task, t.metric_for_best_model, "train.metric_for_best_model")
    except ConfigError as e:
        return str(e)
    if task == "regression" and t.threshold != 0.5:
        return f"train.threshold: {t.threshold!r} is a decision threshold; a regression predicts a number"
    if task != "single_label" and t.calibration != "none":
        return (f"train.calibration: {t.calibration} (temperature scaling of a softmax) applies to single_label "
                f"tasks; this one is {task}")
    if task != "regression" and t.regression_loss != "mse":
        return f"train.regression_loss: {t.regression_loss} applies to regression; this task is {task}"
    return None


@_config()
class ModelEntry:
    """One `models:` entry of a comparison: a model plus its own overrides."""
    name: Str = _f(help="Model name, as in model.name.")
    label: Str | None = _f(None, help="Display name in the report.")
    model: dict | None = _f(None, help="Overrides of the model section (max_length, dtype...).")
    lora: dict | None = _f(None, help="Overrides of the shared lora section (use full_finetune: true for no LoRA).")
    train: dict | None = _f(None, help="Overrides of the shared train section.")
    full_finetune: Bool = _f(False, help="Train all weights instead of LoRA.")
    max_train_samples: Int | None = _f(None, help=(
        "Train this model on a seeded subsample of the shared train split (val and test stay identical)."))


MAX_RESAMPLES = 100_000  # statistics.bootstrap_resamples' upper bound: about a minute of report on 10k rows, 5 models


@_config("statistics")
class StatisticsConfig:
    """Intervals and tests of a comparison (lorabench.evaluation.bootstrap, .significance)."""
    alpha: Float = _f(0.05, help=(
        "Significance level: intervals are 1 - alpha (95%), and a model is 'not separable from the best' when its "
        "Holm-adjusted p-value is at least alpha."))
    bootstrap_resamples: Int = _f(1000, help=(
        "Bootstrap resamples of the val (and test) rows for intervals and paired differences; the same resamples "
        "for every model. From 1000 (Koehn 2004) to 100000."))
    bootstrap_seed: Int = _f(0, help="Seed of the bootstrap resamples (0 or more): the same seed gives the same "
                                     "intervals.")

    @model_validator(mode="after")
    def _check(self) -> StatisticsConfig:
        if not 0.0 < self.alpha < 0.5:
            raise _bad(f"{{key.alpha}} must be in (0, 0.5), got {self.alpha}")
        if self.bootstrap_resamples < 1000:
            raise _bad(f"{{key.bootstrap_resamples}} must be at least 1000 (fewer resamples make the interval ends "
                       f"and p-values noisy), got {self.bootstrap_resamples}")
        if self.bootstrap_resamples > MAX_RESAMPLES:
            raise _bad(f"{{key.bootstrap_resamples}} must be at most {MAX_RESAMPLES} (each resample scores every "
                       f"model once; 10000 already fixes p-values to about 0.005), got {self.bootstrap_resamples}")
        if self.bootstrap_seed < 0:
            raise _bad(f"{{key.bootstrap_seed}} must be 0 or more (numpy's seeds are non-negative), got "
                       f"{self.bootstrap_seed}")
        return self


@_config()
class CompareConfig:
    """Several models on one split: what `lorabench compare` runs."""
    name: Str = _f("compare", help="Comparison name; runs go to runs/<name>/.")
    data: Section[DataConfig] = _f(DataConfig(), help="Shared data section: every model sees this split.")
    model: dict = _f({}, help="Shared model settings (max_length, dtype...) under each entry's own.")
    lora: LoraConfig | None = _f(LoraConfig(), help="Shared LoRA settings.")
    train: Section[TrainConfig] = _f(TrainConfig(), help="Shared Trainer settings.")
    models: list[ModelEntry] = _f([], help="The models to compare.")
    seeds: list[Int] | None = _f(None, help=(
        "Each model is trained once per seed; the report shows mean ± std. Default: one run with train.seed."))
    refit: Bool = _f(False, help=(
        "After the comparison, retrain the model with the best mean val F1 on all train + val rows, for the "
        "(lower median) best epoch its runs picked, into <output>/refit-<label>."))
    notes: Str | None = _f(None, help="Free text shown at the top of the report.")
    statistics: Section[StatisticsConfig] = _f(StatisticsConfig(), help=(
        "How the comparison tells real differences from noise (docs/compare.md#is-the-difference-real)."))
    ensemble_top: Int | None = _f(3, help=(
        "Ensemble row: the mean of the class probabilities of the N models with the best mean val F1, with its "
        "own metrics, saved in <output>/ensemble/ for predict; 0 or null: none. Default 3: the usual baseline, "
        "encoder and decoder of a comparison all join, a weak tail of a longer list stays out."))

    @model_validator(mode="after")
    def _check(self) -> CompareConfig:
        if self.ensemble_top is not None and (self.ensemble_top < 0 or self.ensemble_top == 1):
            raise _bad(f"{{key.ensemble_top}} must be 0 (or null: no ensemble) or at least 2 (the models averaged), "
                       f"got {self.ensemble_top}")
        if not self.models:
            raise _bad("{key.models}: a comparison needs at least one entry")
        labels = [m.label or m.name for m in self.models]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise _bad(f"{{key.models}}: duplicate label {dup[0]!r}; give each entry a distinct `label`")
        if self.seeds is not None and not self.seeds:
            raise _bad("{key.seeds}: give at least one seed")
        if self.seeds is not None and self.train.seed != TrainConfig().seed and self.train.seed not in self.seeds:
            raise _bad(f"{{key.train.seed}}: {self.train.seed} would not be used: a comparison trains every model with "
                       f"each of seeds {self.seeds}; put {self.train.seed} in seeds (seeds: [{self.train.seed}]), "
                       "or leave train.seed out")
        if self.data.fold is not None:
            raise _bad("{key.data.fold}: compare runs every fold of data.folds; leave data.fold out")
        if "name" in self.model:
            raise _bad("{key.model.name}: in a comparison each entry names its model (models[].name); leave "
                       "model.name out")
        for i, entry in enumerate(self.models):
            if "name" in (entry.model or {}):
                raise _bad(f"{{key.models}}[{i}].model.name: the entry's own `name` is its model; leave model.name out")
            if "seed" in (entry.train or {}):
                raise _bad(f"{{key.models}}[{i}].train.seed: a comparison trains every model with each of `seeds`; "
                           f"set seeds: [{entry.train['seed']}] (for every model) instead")
            if entry.lora and (entry.full_finetune or self.lora is None):
                why = "full_finetune: true" if entry.full_finetune else "the shared lora: null"
                raise _bad(f"{{key.models}}[{i}].lora: {why} trains without LoRA, so these settings would not be "
                           "used; drop them or the full fine-tuning")
        return self

    @property
    def run_seeds(self) -> list[int]:
        """The seeds every model is trained with: `seeds`, else [train.seed]."""
        return list(self.seeds) if self.seeds is not None else [self.train.seed]

    def experiments(self) -> list[ExperimentConfig]:
        """The resolved experiment of every (model, seed), and with `data.folds` of every (model, seed, fold),
        in report order."""
        folds = range(1, self.data.folds + 1) if self.data.folds else [None]
        out = []
        for entry in self.models:
            for seed in self.run_seeds:
                out.extend(self.experiment(entry, seed, fold) for fold in folds)
        return out

    @classmethod
    def from_experiment(cls, cfg: ExperimentConfig) -> CompareConfig:
        """A comparison of the one model of `cfg` (what `lorabench train` runs for `data.folds`): its
        experiments are `cfg` with data.fold = 1..folds."""
        model = {k: v for k, v in to_dict(cfg.model).items() if k != "name"}
        return cls(name=cfg.name, data=dataclasses.replace(cfg.data, fold=None), model=model,
                   lora=cfg.lora, train=cfg.train, seeds=None,
                   models=[ModelEntry(name=cfg.model.name, label=cfg.label, full_finetune=cfg.lora is None)])

    def experiment(self, entry: ModelEntry, seed: int, fold: int | None = None) -> ExperimentConfig:
        where = f"models[{next(i for i, e in enumerate(self.models) if e is entry)}]"
        model = {**self.model, **(entry.model or {}), "name": entry.name}
        train = {**dataclasses.asdict(self.train), **(entry.train or {}), "seed": seed}
        if entry.full_finetune or self.lora is None:
            lora = None
        else:
            lora = from_dict(LoraConfig, {**dataclasses.asdict(self.lora), **(entry.lora or {})}, f"{where}.lora")
        data = self.data
        if entry.max_train_samples is not None:
            data = dataclasses.replace(data, max_train_samples=entry.max_train_samples)
        if fold is not None:
            data = dataclasses.replace(data, fold=fold)
        return from_dict(ExperimentConfig, {
            "name": self.name,
            "data": data,
            "model": from_dict(ModelConfig, model, f"{where}.model"),
            "lora": lora,
            "train": from_dict(TrainConfig, train, f"{where}.train"),
            "label": entry.label or entry.name,
        }, where)


@_config("sweep.metric")
class SweepMetric:
    name: Str | None = _f(None, help=(
        "Val metric to optimise; default: the task's (f1, f1_micro for multi_label, rmse for regression). f1, "
        "precision, recall, accuracy, any metric of the task (W&B's `eval/f1-score` = f1)."))
    goal: Literal["maximize", "minimize"] | None = _f(None, help=(
        "maximize or minimize; default: the metric's direction (minimize rmse, mae, hamming_loss, loss)."))


@_config("sweep")
class SweepSection:
    """The `sweep:` section; W&B sweep files are accepted as written."""
    method: Literal["bayes", "random", "grid"] = _f("bayes", help="bayes = Optuna TPE; random; grid.")
    metric: Section[SweepMetric] = _f(SweepMetric(), help="What to optimise.")
    parameters: dict = _f({}, help=(
        "Search space in W&B form: `value`, `values`, or `distribution` (uniform, log_uniform_values, "
        "int_uniform, q_uniform, categorical, log_uniform) with min/max (q). Names: the study's lora_rank, "
        "lora_alpha, lora_dropout, lora_bias, learning_rate, max_length... or dotted config keys."))
    run_cap: Int | None = _f(None, help="Trials to run (W&B's name).")
    trials: Int | None = _f(None, help="Trials to run (same as run_cap; --trials overrides both).")
    pruner: Literal["median", "hyperband", "none"] = _f("median", help="Stop unpromising trials early.")
    seed: Int = _f(0, help="Sampler seed.")
    heartbeat_seconds: Int = _f(30, help="A trial whose worker is silent this long (x2) is marked failed and retried.")
    max_retries: Int = _f(2, help="Retries of a trial whose worker died.")
    name: Str | None = _f(None, help="W&B's sweep name (informational).")
    program: Str | None = _f(None, help="W&B's training script (ignored: lorabench trains).")
    command: list | None = _f(None, help="W&B's command (ignored).")
    early_terminate: dict | None = _f(None, help="W&B's early termination: any value switches on hyperband.")
    project: Str | None = _f(None, help="W&B project (ignored).")
    entity: Str | None = _f(None, help="W&B entity (ignored).")
    description: Str | None = _f(None, help="Free text.")

    @model_validator(mode="after")
    def _check(self) -> SweepSection:
        if not self.parameters:
            raise _bad("{key.parameters}: give at least one parameter to search")
        n = self.n_trials
        if n is not None and n < 1:
            raise _bad(f"{{key.run_cap}} must be >= 1, got {n}")
        return self

    @property
    def n_trials(self) -> int | None:
        return self.trials if self.trials is not None else self.run_cap


@_config()
class SweepConfig(ExperimentConfig):
    """One model, many hyperparameter settings: what `lorabench sweep` runs (an experiment + `sweep:`)."""
    sweep: SweepSection | None = _f(None, help="The search space and objective (required).")

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        if self.sweep is None:
            raise _bad("missing key '{key.sweep}' (the search space and objective)")
        if self.data.folds and self.data.fold is None:
            raise _bad("{key.data.folds}: a sweep scores each trial on one split; set data.fold to sweep on one fold")
        return self

    def base(self) -> ExperimentConfig:
        return ExperimentConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ExperimentConfig)})
