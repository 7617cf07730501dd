"""Training: tokenise once, HF Trainer with the weighted loss hook, eval each epoch, keep best.

No sweep or report logic here: `train()` takes a built model and the splits and returns
what happened (`TrainResult`).
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lorabench import distributed
from lorabench.config.schema import TrainConfig
from lorabench.config.tasks import METRICS as TASK_METRICS
from lorabench.config.tasks import POOLING, greater_is_better, resolve_metric
from lorabench.data.splits import Split, Splits
from lorabench.data.windows import encode, pool
from lorabench.evaluation.calibration import apply_temperature, calibration_for
from lorabench.evaluation.metrics import (
    classification_metrics,
    predict_labels,
    softmax,
    split_evaluation,
    tune_threshold,
)
from lorabench.evaluation.tasks import detail, outputs_from_logits, score, tune_thresholds, val_loss
from lorabench.models.build import Built
from lorabench.models.hub_code import import_peft
from lorabench.runs.files import write_json
from lorabench.runs.resources import PeakMemory
from lorabench.training.batch import resolve_batch
from lorabench.training.checkpoint import RESUME_FILE
from lorabench.training.loss import WeightedCrossEntropy, loss_for
from lorabench.training.progress import progress_callback
from lorabench.training.sampler import length_buckets


def tokenize(split: Split, tokenizer, max_length: int, *, sort: bool = False, long_text: str = "truncate",
             stride: int = 0):
    """(dataset of input ids, row order, doc). No padding: the collator pads per batch.

    Each dataset row is a window of a text (`data.windows.encode`: one per text unless `long_text` is `chunk`),
    labelled with its text's label. With `sort`, rows are ordered by length (evaluation batches then carry little
    padding); `order[i]` is the window at dataset position i and `doc[w]` the split row window w comes from.
    """
    import datasets
    enc, doc = encode(tokenizer, split.texts, max_length, long_text, stride)
    cols = dict(enc)
    if split.labelled:  # a label id, a 0/1 list (multi_label) or a number (regression) per window
        cols["labels"] = [_window_label(split.labels[d]) for d in doc]
    order = np.arange(len(doc))
    if sort:
        order = np.argsort([len(x) for x in cols["input_ids"]], kind="stable")
        cols = {k: [v[i] for i in order] for k, v in cols.items()}
    return datasets.Dataset.from_dict(cols), order, doc


def _window_label(y):
    if isinstance(y, tuple):
        return list(y)
    if isinstance(y, float):
        return y
    return int(y)


def _trainer_class():
    from lorabench.speedups import cpu as speed  # imports torch (its levers subclass torch modules)
    import_peft()  # transformers' Trainer imports peft, and peft bitsandbytes (lorabench.models.hub_code)
    import torch
    from transformers import Trainer

    class BucketSampler(torch.utils.data.Sampler):
        """Epoch e's order = the e-th draw of one generator seeded with `seed` (new batches every epoch,
        same seed same run). The Trainer calls `set_epoch`, so a run resumed at epoch e gets the order an
        uninterrupted run would have had."""

        def __init__(self, lengths, batch_size: int, seed: int):
            self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
            self.epoch: int | None = None
            self._iterations = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __len__(self):
            return len(self.lengths)

        def __iter__(self):
            epoch = self.epoch if self.epoch is not None else self._iterations
            self._iterations += 1
            rng = np.random.default_rng(self.seed)
            for _ in range(epoch):  # replay the earlier epochs' draws (a permutation each: milliseconds)
                length_buckets(self.lengths, self.batch_size, rng)
            return iter(length_buckets(self.lengths, self.batch_size, rng))

    class LorabenchTrainer(Trainer):
        """The Trainer with lorabench's tight length buckets, evaluation in dataset order, and the
        class-weighted loss normalised over the whole optimiser step."""

        def _get_train_sampler(self, train_dataset=None):
            ds = train_dataset if train_dataset is not None else self.train_dataset
            if self.args.train_sampling_strategy != "group_by_length" or ds is None:
                return super()._get_train_sampler(train_dataset)
            # One bucket = one optimiser step of every process: accelerate deals the sampler's batches out
            # in turn (process r takes batches r, r+W, ...), so each process's batches are length-bucketed
            # too and a step's processes wait on no longer batch.
            size = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
            return BucketSampler([len(x) for x in ds["input_ids"]], size, self.args.seed)

        def _save_checkpoint(self, model, trial):
            # The Trainer's checkpoint holds adapter + head, optimizer, scheduler, scaler, RNG states and
            # trainer_state.json (epoch, step, best so far, log history). lorabench adds what only it
            # knows (the fast-dropout generator) in RESUME_FILE, written atomically and last: a checkpoint
            # without it is incomplete (killed mid-write) and is never resumed from.
            super()._save_checkpoint(model, trial)
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            masks = distributed.gather(speed.rng_state())  # every process's dropout-mask generator, in rank order
            if self.args.should_save and folder.is_dir():
                clock = getattr(self, "lorabench_clock", None)  # time spent so far, over every process of the run
                write_json(folder / RESUME_FILE, {"epoch": self.state.epoch, "step": self.state.global_step,
                                                  "fast_dropout_rng": masks[0], "fast_dropout_rng_per_process": masks,
                                                  **(clock() if clock else {})})

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            # The Trainer's eval loss is a mean of per-batch losses; a class-weighted mean is not additive, so
            # it changed with the eval batch size and the number of processes. Return no per-batch loss: the
            # val loss comes from `_metrics_fn`, over every val row at once.
            _, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
            return None, logits, labels

        def _get_eval_sampler(self, eval_dataset):
            # transformers groups evaluation batches by length too when train_sampling_strategy is
            # group_by_length, so predictions come back in another order than the dataset's. lorabench
            # pairs predictions with the split's rows by position: evaluate in dataset order, always
            # (the eval datasets are already sorted by length, so batches stay tight).
            if self.args.world_size <= 1:
                return torch.utils.data.SequentialSampler(eval_dataset)
            return None  # distributed: accelerate shards sequentially

        def _get_num_items_in_batch(self, batch_samples, device):
            # The Trainer divides a compute_loss_func loss by `num_items_in_batch`, counted over the whole
            # optimiser step (all micro-batches, and all processes). With class weights the right divisor
            # is the summed weight of those rows: then batch 4 x accumulation 2 (or 2 processes x 4) makes
            # the same update as batch 8, which a per-micro-batch weighted mean does not.
            # multi_label and regression losses are means over the row-label pairs (rows) of the whole step.
            loss_fn = self.compute_loss_func
            if batch_samples and "labels" in batch_samples[0] and not isinstance(loss_fn, WeightedCrossEntropy):
                total = torch.tensor(float(sum(b["labels"].numel() for b in batch_samples)), device=device)
            elif (not isinstance(loss_fn, WeightedCrossEntropy) or loss_fn.weights is None or not batch_samples
                    or "labels" not in batch_samples[0]):
                return super()._get_num_items_in_batch(batch_samples, device)
            else:
                total = sum(loss_fn.weight_sum(b["labels"]) for b in batch_samples).to(device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                total = self.accelerator.gather(total.reshape(1)).sum()
            return total

    return LorabenchTrainer

@dataclass
class EvalOutput:
    metrics: dict[str, float]
    probs: np.ndarray | None


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: float | None = None
    train_seconds: float = 0.0          # wall time of Trainer.train(), per-epoch evaluation included
    pure_train_seconds: float = 0.0     # the training steps alone (evaluation excluded)
    eval_seconds: float = 0.0
    peak_memory_mb: Any = None
    train_samples_per_second: float = 0.0
    train_tokens_per_second: float = 0.0
    epochs_run: float = 0.0
    steps: int = 0
    val: EvalOutput | None = None
    test: EvalOutput | None = None
    threshold: float | list[float] | None = None  # multi_label: one per label
    val_at_threshold: dict | None = None
    test_at_threshold: dict | None = None
    speed: dict | None = None           # speed levers applied (lorabench.speedups.cpu)
    parallel: dict | None = None        # processes and batch sizes (see `_parallel`)
    batch: dict | None = None           # the batch size and learning rate trained with, and why (training.batch)
    resumed_from: float | None = None   # the epoch a resumed run continued after (None: not resumed)
    val_detail: dict | None = None      # per-class results, confusion matrix, AUCs, MCC (metrics.evaluation_detail)
    test_detail: dict | None = None
    calibration: dict | None = None     # train.calibration: the temperature and val log loss (evaluation.calibration)


class _Timer:
    """Trainer callback: time inside epochs (training steps only, evaluation excluded)."""

    def __new__(cls, *a, **kw):
        from transformers import TrainerCallback

        class Impl(TrainerCallback):
            def __init__(self):
                self.step_seconds = 0.0
                self._t = None

            def on_epoch_begin(self, args, state, control, **kw):
                self._t = time.perf_counter()

            def on_epoch_end(self, args, state, control, **kw):
                if self._t is not None:
                    self.step_seconds += time.perf_counter() - self._t
                    self._t = None

        return Impl()


class _KeepLogits:
    """Trainer callback: files the logits `_metrics_fn` kept under the step they were evaluated at, so the
    best epoch's val probabilities need no second pass over val (evaluation is deterministic)."""

    def __new__(cls, keep: dict):
        from transformers import TrainerCallback

        class Impl(TrainerCallback):
            def on_evaluate(self, args, state, control, **kw):
                if "last" in keep:
                    keep[state.global_step] = keep.pop("last")

        return Impl()


def _training_args(cfg: TrainConfig, out: Path, built: Built, has_eval: bool, report_to: list[str] | str,
                   metric: str = "f1"):
    import transformers
    if built.precision is None:
        raise ValueError("Built.precision is None: build the model with models.build.build_classifier, which records "
                         "the run's precision decision")
    return transformers.TrainingArguments(
        **built.precision.training_arguments(),  # device and mixed precision: decided once, never guessed here
        output_dir=str(out),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size or cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,          # transformers 5: a float in (0, 1) is a ratio
        max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        data_seed=cfg.seed,
        eval_strategy="epoch" if has_eval else "no",
        save_strategy="epoch",  # a checkpoint per epoch: a killed run resumes (a refit, with no eval, too)
        save_total_limit=2,  # the newest and the one before it (a kill mid-write leaves that one), plus the best
        load_best_model_at_end=has_eval,
        metric_for_best_model=metric,
        greater_is_better=greater_is_better(metric),
        logging_steps=cfg.logging_steps,
        report_to=report_to,  # the integrations the Trainer runs itself (the pipeline attaches the others as callbacks)
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        dataloader_num_workers=cfg.dataloader_num_workers,
        torch_compile=cfg.torch_compile,
        save_only_model=False,  # optimizer, scheduler, scaler and RNG states too: a killed run resumes exactly
        # and the state of every stateful callback (early stopping's patience counter, the caller's callbacks that
        # implement transformers' ExportableState): a resumed run decides what to do next as the uninterrupted one
        restore_callback_states_from_checkpoint=True,
        average_tokens_across_devices=True,  # the weighted loss is normalised over all processes' rows
        log_level_replica="passive",  # the other processes keep the caller's logging (lorabench.quiet), as the main one
        ddp_find_unused_parameters=False,  # LoRA + head train in every forward; the frozen original head holds no grads
        disable_tqdm=True,  # lorabench.training.progress draws one bar and prints a line per epoch
    )


def _metrics_fn(num_labels: int, class_weights: list[float] | None, keep: dict | None = None,
                windows: tuple | None = None, task: str = "single_label", regression_loss: str = "mse"):
    """Val metrics from the logits and labels of every val row (each once, in any number of processes): the task's
    metrics (`evaluation.tasks.score`; single_label: F1, precision, recall, accuracy) and `loss` = the training
    loss over every val row at once, which does not depend on the eval batch size (single_label: the class-weighted
    cross-entropy sum_i w[y_i] nll_i / sum_i w[y_i]; `evaluation.tasks.val_loss` otherwise). With `keep`, the logits
    ((rows, classes) float64, eval-dataset order) are left in keep["last"] for `_KeepLogits`. With `windows` =
    (order, doc, labels) of a val set read in several windows per text (`data.long_text: chunk`), the windows'
    outputs are pooled per text first and every number is per text (single_label: nll = -log of the pooled
    probability; other tasks: the loss of the pooled output)."""
    w = np.asarray(class_weights, dtype=np.float64) if class_weights is not None else None

    def compute(eval_pred) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        logits = np.asarray(logits[0] if isinstance(logits, tuple) else logits, dtype=np.float64)
        if keep is not None:
            keep["last"] = logits
        if task != "single_label":
            if windows is not None:
                order, doc, labels = windows
                outputs = _row_probs(logits, order, doc, len(labels), task)
                loss = val_loss(task, labels, _as_logits(task, outputs), class_weights, regression_loss)
            else:
                outputs = outputs_from_logits(task, logits)
                labels = [tuple(y) for y in labels] if task == "multi_label" else labels
                loss = val_loss(task, labels, logits, class_weights, regression_loss)
            found = score(task, labels, outputs, num_labels)
            return {**{k: v for k, v in found.items() if v is not None}, "loss": loss}
        if windows is not None:
            order, doc, doc_labels = windows
            probs = _row_probs(logits, order, doc, len(doc_labels))
            labels = np.asarray(doc_labels).astype(int)
            nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-300, None))
        else:
            labels = np.asarray(labels).astype(int)
            z = logits - logits.max(axis=-1, keepdims=True)
            nll = np.log(np.exp(z).sum(axis=-1)) - z[np.arange(len(labels)), labels]
            probs = softmax(logits)
        row_w = w[labels] if w is not None else np.ones(len(labels))
        loss = float((row_w * nll).sum() / row_w.sum()) if len(labels) else float("nan")
        return {**classification_metrics(labels, predict_labels(probs), num_labels), "loss": loss}
    return compute


def _as_logits(task: str, outputs: np.ndarray) -> np.ndarray:
    """Pooled outputs back on the logit scale the loss reads: log-odds of the probabilities (multi_label), the
    values themselves (regression)."""
    if task == "multi_label":
        p = np.clip(outputs, 1e-12, 1 - 1e-12)
        return np.log(p) - np.log1p(-p)
    return outputs


def _cached(cache: dict | None, key: tuple, make):
    if cache is None:
        return make()
    if key not in cache:
        cache[key] = make()
    return cache[key]


def train(built: Built, splits: Splits, cfg: TrainConfig, out_dir: Path, *,
          max_length: int, callbacks: list | None = None, token_cache: dict | None = None,
          resume_from: Path | None = None, label: str = "train", report_to: list[str] | str = "none",
          temperature: float | None = None, long_text: str = "truncate", stride: int = 0,
          thresholds: list[float] | None = None) -> TrainResult:
    """Fine-tune `built.model` on `splits.train`, evaluating on val each epoch; keep the best.

    With no val rows (a refit, `data.splits.refit_splits`) nothing is evaluated during training: it runs
    `cfg.epochs` and keeps the final epoch's model; `val`, `history` and `best_epoch` stay empty and a
    binary threshold comes from `cfg.threshold` (a number).

    Each epoch's checkpoint goes to `out_dir/checkpoints/checkpoint-<step>` with the full training
    state; `resume_from` (a complete checkpoint, see `last_complete_checkpoint`) continues a killed run
    exactly where it stopped: same batches, dropout masks and updates as an uninterrupted run.
    `token_cache` (a dict kept by the caller, e.g. a sweep worker) makes repeated runs on the
    same splits, tokenizer and max_length tokenise once. The speed levers (`lorabench.speedups.cpu`)
    are applied for the run and undone after it, also when it fails. The console shows one progress bar and a
    line per epoch, headed by `label` (`training.progress`). `report_to`: the experiment-tracker integrations the
    Trainer itself runs (its `report_to`; `lorabench.tracking.trainer_report_to` picks them). With
    `cfg.calibration` temperature, val and test probabilities are calibrated after training (fitted on val, or with
    `temperature` for a run without val rows: a refit inherits its sources'). `long_text` / `stride`: how texts
    longer than max_length are read (`data.windows`); with `chunk` every metric and probability is per text.
    """
    from lorabench.speedups import cpu as speed  # imports torch (its levers subclass torch modules)
    import_peft()
    levers: dict = {}  # filled by _train once the Trainer has placed the model
    try:
        return _train(built, splits, cfg, out_dir, max_length=max_length, callbacks=callbacks,
                      token_cache=token_cache, levers=levers, resume_from=resume_from, label=label,
                      report_to=report_to, temperature=temperature, long_text=long_text, stride=stride,
                      thresholds=thresholds)
    finally:
        speed.restore_all(built.model, levers)


def _history(log_history: list[dict], task: str = "single_label") -> list[dict]:
    """Per-evaluation val metrics from the Trainer's log history (restored too when a run resumes)."""
    rows = []
    for entry in log_history:
        if "eval_loss" in entry or "eval_f1" in entry:
            row = {"epoch": round(float(entry.get("epoch") or 0), 4), "step": int(entry.get("step", 0))}
            for k in (*TASK_METRICS[task], "loss"):
                if f"eval_{k}" in entry:
                    row[k] = float(entry[f"eval_{k}"])
            rows.append(row)
    return rows


def _train(built: Built, splits: Splits, cfg: TrainConfig, out_dir: Path, *, max_length: int,
           callbacks: list | None, token_cache: dict | None, levers: dict,
           resume_from: Path | None = None, label: str = "train", report_to: list[str] | str = "none",
           temperature: float | None = None, long_text: str = "truncate", stride: int = 0,
           thresholds: list[float] | None = None) -> TrainResult:
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from lorabench.speedups import cpu as speed  # imports torch (its levers subclass torch modules)



    task = splits.task
    metric = resolve_metric(task, cfg.metric_for_best_model, "train.metric_for_best_model")
    tok = built.tokenizer
    key = (tok.name_or_path, type(tok).__name__, max_length, splits.fingerprint, long_text, stride)
    read = {"long_text": long_text, "stride": stride}
    train_ds, _, _ = _cached(token_cache, key + ("train",), lambda: tokenize(splits.train, tok, max_length, **read))
    # train.batch_size auto: from the rows trained on (long_text: chunk: the windows)
    cfg, batch = resolve_batch(cfg, len(train_ds), distributed.world_size())
    has_val = len(splits.val) > 0
    val_ds, val_order, val_doc = _cached(
        token_cache, key + ("val",), lambda: tokenize(splits.val, tok, max_length, sort=True, **read)) \
        if has_val else (None, None, None)
    pooled = has_val and len(val_doc) != len(splits.val)  # chunk: several windows of some val texts
    ckpt = out_dir / "checkpoints"
    args = _training_args(cfg, ckpt, built, has_eval=has_val, report_to=report_to, metric=metric)
    timer = _Timer()
    logits_by_step: dict = {}
    cbs = [timer, _KeepLogits(logits_by_step)] + list(callbacks or [])
    if cfg.early_stopping_patience and has_val:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = _trainer_class()(
        model=built.model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
        data_collator=DataCollatorWithPadding(tok), processing_class=tok,
        compute_loss_func=loss_for(task, splits.class_weights, cfg.regression_loss),
        compute_metrics=_metrics_fn(splits.num_labels, splits.class_weights, logits_by_step,
                                    (val_order, val_doc, splits.val.labels) if pooled else None, task,
                                    cfg.regression_loss) if has_val else None,
        callbacks=cbs,
    )
    for default in (PrinterCallback, ProgressCallback):  # the Trainer's printed dicts and bars: not lorabench's
        trainer.remove_callback(default)
    trainer.add_callback(progress_callback(label, metric))
    result = TrainResult(batch=batch)
    speed.apply(built.model, built.arch, cfg, levers)  # after the Trainer moved the model to its device
    result.speed = {k: v for k, v in levers.items() if not k.startswith("_") and k != "attention_registered"} or None
    saved: dict = {}
    if resume_from is not None:
        saved = json.loads((resume_from / RESUME_FILE).read_text())
        per_process = saved.get("fast_dropout_rng_per_process") or []
        speed.set_rng_state(per_process[distributed.rank()] if len(per_process) == distributed.world_size()
                            else saved.get("fast_dropout_rng"))
        result.resumed_from = float(saved["epoch"])
    prior_train, prior_pure = saved.get("train_seconds", 0.0), saved.get("pure_train_seconds", 0.0)
    with PeakMemory() as peak:
        t0 = time.perf_counter()
        trainer.lorabench_clock = lambda: {"train_seconds": prior_train + time.perf_counter() - t0,
                                           "pure_train_seconds": prior_pure + timer.step_seconds,
                                           "peak_memory_mb": max(saved.get("peak_memory_mb", 0.0), peak.now_mb())}
        out = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        # a resumed run reports the time of all its processes (up to the checkpoint it resumed from, then this one)
        result.train_seconds = prior_train + time.perf_counter() - t0
    result.peak_memory_mb = peak.result
    result.parallel = _parallel(trainer.args)
    if trainer.args.world_size > 1:  # every process's own peak (each holds a model copy)
        peaks = distributed.gather(peak.result["mb"])
        result.peak_memory_mb = {k: v for k, v in peak.result.items() if k != "per_device_mb"}  # rank 0's view only
        result.peak_memory_mb.update(per_process_mb=peaks, mb=max(peaks))
    if saved.get("peak_memory_mb", 0.0) > result.peak_memory_mb["mb"]:
        result.peak_memory_mb = {**result.peak_memory_mb, "mb": saved["peak_memory_mb"], "scope": "run, all processes"}
    result.pure_train_seconds = (prior_pure + timer.step_seconds) if timer.step_seconds else result.train_seconds
    result.eval_seconds = max(result.train_seconds - result.pure_train_seconds, 0.0)
    result.history = _history(trainer.state.log_history, task)
    result.epochs_run = float(trainer.state.epoch or 0)
    result.steps = int(trainer.state.global_step)
    seen = result.steps * result.parallel["global_batch_size"]
    seen = min(seen, math.ceil(result.epochs_run * len(train_ds)))
    result.train_samples_per_second = seen / result.pure_train_seconds if result.pure_train_seconds else 0.0
    real_tokens = sum(len(x) for x in train_ds["input_ids"]) / max(len(train_ds), 1)
    result.train_tokens_per_second = result.train_samples_per_second * real_tokens
    best = trainer.state.best_global_step
    result.best_epoch = next((h["epoch"] for h in result.history if h["step"] == best), None)

    best_row = next((h for h in result.history if h["step"] == best), None)
    if best_row is not None and best in logits_by_step:
        # the best model is loaded and evaluation is deterministic: its val metrics and logits are those logged
        probs = _row_probs(logits_by_step[best], val_order, val_doc, len(splits.val), task)
        result.val = EvalOutput(score(task, splits.val.labels, probs, splits.num_labels), probs=probs)
    elif has_val:  # e.g. the best epoch was evaluated before a resume
        result.val = evaluate(trainer, val_ds, val_order, splits.num_labels, val_doc, splits.val.labels, task)
    if splits.test is not None and splits.test.labelled:  # unlabelled test rows: nothing to score
        test_ds, test_order, test_doc = tokenize(splits.test, tok, max_length, sort=True, **read)
        result.test = evaluate(trainer, test_ds, test_order, splits.num_labels, test_doc, splits.test.labels, task)
    result.calibration = calibration_for(cfg.calibration, splits.val.labels, result.val.probs if has_val else None,
                                         fixed=temperature)
    if result.calibration:  # every probability after this point is calibrated; the most probable class is not changed
        for out in (result.val, result.test):
            if out is not None:
                out.probs = apply_temperature(out.probs, result.calibration["temperature"])
    if task != "single_label":
        decide_and_score(result, splits, cfg.threshold, has_val, thresholds)
        if trainer.args.should_save:
            shutil.rmtree(ckpt, ignore_errors=True)
        del out
        return result
    if cfg.threshold == "tune" and splits.num_labels == 2 and has_val:
        y = np.asarray(splits.val.labels)
        result.threshold, _ = tune_threshold(y, result.val.probs)
    elif splits.num_labels == 2 and cfg.threshold not in (0.5, "tune"):
        result.threshold = float(cfg.threshold)
    if result.threshold is not None and has_val:
        result.val_at_threshold = classification_metrics(
            np.asarray(splits.val.labels), predict_labels(result.val.probs, result.threshold), 2)
    if result.threshold is not None and result.test is not None and splits.test.labelled:
        result.test_at_threshold = classification_metrics(
            np.asarray(splits.test.labels), predict_labels(result.test.probs, result.threshold), 2)
    if has_val:
        result.val_detail = split_evaluation(splits.val.labels, result.val.probs, splits.label_names, result.threshold)
    if result.test is not None:
        result.test_detail = split_evaluation(splits.test.labels, result.test.probs, splits.label_names, result.threshold)
    if trainer.args.should_save:  # the main process: the best model is saved by the pipeline; keep the run lean
        shutil.rmtree(ckpt, ignore_errors=True)
    del out
    return result


def _parallel(args) -> dict:
    """How the run was spread: `world_size` processes (one per GPU, or per CPU process under gloo), each with
    `per_device_batch_size` rows per micro-batch; one optimiser step sees `global_batch_size` =
    per-device batch x processes x gradient accumulation rows (the learning rate applies to that batch)."""
    backend = None
    if args.world_size > 1:
        from accelerate import PartialState
        backend = str(PartialState().backend)
    out = {"world_size": args.world_size, "backend": backend, "per_device_batch_size": args.per_device_train_batch_size,
           "gradient_accumulation_steps": args.gradient_accumulation_steps,
           # args.train_batch_size = per-device batch x the GPUs one process drives (the Trainer's DataParallel
           # when one process sees several GPUs without a launcher)
           "global_batch_size": args.train_batch_size * args.gradient_accumulation_steps * args.world_size}
    if args.n_gpu > 1:
        out["gpus_per_process"] = args.n_gpu
    return out


def decide_and_score(result, splits: Splits, threshold, has_val: bool, inherited: list[float] | None = None) -> None:
    """multi_label and regression, after training (a transformer or the baseline): the decision threshold of each
    label (multi_label: `train.threshold`, or with `tune` each label's F1-best on val; None for regression), the val
    and test metrics at it (`val_at_threshold` / `test_at_threshold` when it differs from 0.5) and the detail
    (`evaluation.tasks.detail`). `result` has `val`, `test` (EvalOutput or None) and receives the rest. `inherited`:
    a refit's thresholds (no val rows: each label's median over the runs it is refit from, `pipeline.refit`)."""
    task = splits.task
    if task == "multi_label":
        if threshold == "tune" and has_val:
            result.threshold = tune_thresholds(splits.val.labels, result.val.probs)
        elif threshold == "tune" and inherited is not None:
            result.threshold = [float(t) for t in inherited]
        elif threshold not in (0.5, "tune"):
            result.threshold = [float(threshold)] * splits.num_labels
    if result.threshold is not None:
        if has_val:
            result.val_at_threshold = score(task, splits.val.labels, result.val.probs, splits.num_labels,
                                            result.threshold)
        if result.test is not None:
            result.test_at_threshold = score(task, splits.test.labels, result.test.probs, splits.num_labels,
                                             result.threshold)
    if has_val:
        result.val_detail = detail(task, splits.val.labels, result.val.probs, splits.label_names, result.threshold)
    if result.test is not None:
        result.test_detail = detail(task, splits.test.labels, result.test.probs, splits.label_names, result.threshold)


def evaluate(trainer, dataset, order: np.ndarray, num_labels: int, doc: np.ndarray, labels,
             task: str = "single_label") -> EvalOutput:
    """Outputs of the (best) model on `dataset` (windows in `order`), pooled per split row (`doc`: each
    window's row; `data.windows.pool`) in split row order; the task's metrics from the rows' `labels`."""
    metrics_fn, trainer.compute_metrics = trainer.compute_metrics, None  # per-epoch val metrics: not this split's
    try:
        pred = trainer.predict(dataset)
    finally:
        trainer.compute_metrics = metrics_fn
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    probs = _row_probs(logits, order, doc, len(labels), task)
    return EvalOutput(score(task, labels, probs, num_labels), probs=probs)


def _row_probs(logits, order: np.ndarray, doc: np.ndarray, rows: int, task: str = "single_label") -> np.ndarray:
    """(rows, classes) float64 outputs (`evaluation.tasks.outputs_from_logits`: probabilities, or the value of a
    regression) in split row order from the logits of a (length-sorted) dataset: `order[i]` is the window at
    dataset position i, `doc[w]` the split row of window w (`data.windows.pool`, by the task's pooling)."""
    logits = np.asarray(logits, dtype=np.float64)
    per_window = np.empty_like(logits)
    per_window[order] = outputs_from_logits(task, logits)
    return pool(per_window, doc, rows, POOLING[task])
