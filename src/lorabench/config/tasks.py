"""The three tasks lorabench trains for, and the metrics each one is scored by (names only: the numbers are computed
by `lorabench.evaluation.tasks`). Kept in the config layer so a config is checked against its task without importing
torch, scikit-learn or the data.

- `single_label`: one class per text (binary or more classes): softmax over the classes.
- `multi_label`: a set of labels per text (any number, also none): a sigmoid per label.
- `regression`: one number per text.
"""
from __future__ import annotations

from lorabench.errors import ConfigError

TASKS = ("single_label", "multi_label", "regression")

# the val metrics of each task, as run.json `metrics.val` holds them (every one can pick the best epoch)
METRICS: dict[str, tuple[str, ...]] = {
    "single_label": ("f1", "precision", "recall", "accuracy"),
    "multi_label": ("f1_micro", "f1_macro", "f1_weighted", "precision_micro", "recall_micro", "subset_accuracy",
                    "hamming_loss", "roc_auc_macro", "pr_auc_macro"),
    "regression": ("rmse", "mae", "r2", "pearson", "spearman"),
}
# what picks the best epoch, the best model of a comparison, a sweep's objective and an ensemble's members by default
PRIMARY = {"single_label": "f1", "multi_label": "f1_micro", "regression": "rmse"}
LOWER_IS_BETTER = frozenset({"loss", "hamming_loss", "rmse", "mae"})
# how the windows of one text are pooled (data.long_text: chunk): the mean of the class probabilities, the largest
# probability of each label (a label present in any window is present in the text), the mean of the values
POOLING = {"single_label": "mean", "multi_label": "max", "regression": "mean"}
# display names for tables
DISPLAY = {"f1": "F1", "precision": "precision", "recall": "recall", "accuracy": "accuracy", "f1_micro": "micro F1",
           "f1_macro": "macro F1", "f1_weighted": "weighted F1", "precision_micro": "micro precision",
           "recall_micro": "micro recall", "subset_accuracy": "subset accuracy", "hamming_loss": "Hamming loss",
           "roc_auc_macro": "macro ROC-AUC", "pr_auc_macro": "macro PR-AUC", "rmse": "RMSE", "mae": "MAE",
           "r2": "R²", "pearson": "Pearson r", "spearman": "Spearman ρ", "loss": "loss"}


def greater_is_better(metric: str) -> bool:
    """True for metrics where higher is better (F1, R², ...), False for losses and errors (RMSE, Hamming loss)."""
    return metric not in LOWER_IS_BETTER


def primary(task: str | None) -> str:
    """The metric that picks the best epoch and model of `task` (None: single_label)."""
    return PRIMARY[task or "single_label"]


def resolve_metric(task: str | None, metric: str | None, key: str) -> str:
    """`metric` checked against `task` (None: the task's primary metric). Raises `ConfigError` naming `key`
    when the metric does not fit the task (e.g. `f1` for regression)."""
    task = task or "single_label"
    if metric is None:
        return PRIMARY[task]
    if metric != "loss" and metric not in METRICS[task]:
        other = next((t for t in TASKS if metric in METRICS[t]), None)
        why = f" ({metric} is a {other.replace('_', '-')} metric)" if other else ""
        raise ConfigError(f"{key}: {metric!r} does not fit data.task {task}{why}; this task's metrics: "
                          f"{', '.join(METRICS[task])} or loss")
    return metric


def better(metric: str, a: float, b: float) -> bool:
    """True when score `a` is strictly better than `b` by `metric`'s direction."""
    return a < b if metric in LOWER_IS_BETTER else a > b


def metrics_text(task: str | None, m: dict, split: str = "val") -> str:
    """One line of a split's metrics for the console: `val F1 0.8123 (precision ..., recall ..., accuracy ...)`,
    `val micro F1 ... (macro F1 ..., subset accuracy ..., Hamming loss ...)`, `val RMSE ... (MAE ..., R² ...,
    Pearson r ..., Spearman ρ ...)`."""
    task = task or "single_label"
    shown = {"single_label": ("precision", "recall", "accuracy"),
             "multi_label": ("f1_macro", "subset_accuracy", "hamming_loss", "roc_auc_macro"),
             "regression": ("mae", "r2", "pearson", "spearman")}[task]
    head = PRIMARY[task]

    def num(v) -> str:
        return "n/a" if v is None else f"{v:.4f}"
    return f"{split} {DISPLAY[head]} {num(m.get(head))} (" + ", ".join(f"{DISPLAY[k]} {num(m.get(k))}" for k in shown) + ")"
