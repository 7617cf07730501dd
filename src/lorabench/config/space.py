"""A sweep's search space: W&B `parameters` -> Optuna distributions, checked up front, and the
experiment config of one trial.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

from lorabench.config.loading import from_dict, to_dict
from lorabench.config.schema import ExperimentConfig
from lorabench.config.tasks import METRICS as TASK_METRICS
from lorabench.config.tasks import greater_is_better, resolve_metric
from lorabench.errors import ConfigError, LorabenchWarning

# The study's (W&B) parameter names -> lorabench config keys. Dotted config keys work too.
PARAM_KEYS = {
    "lora_rank": "lora.r", "lora_r": "lora.r", "lora_alpha": "lora.alpha", "lora_dropout": "lora.dropout",
    "lora_bias": "lora.bias", "learning_rate": "train.learning_rate", "lr": "train.learning_rate",
    "max_length": "model.max_length", "batch_size": "train.batch_size", "epochs": "train.epochs",
    "num_train_epochs": "train.epochs", "weight_decay": "train.weight_decay", "warmup_ratio": "train.warmup_ratio",
    "lr_scheduler_type": "train.lr_scheduler", "max_grad_norm": "train.max_grad_norm",
}
METRIC_NAMES = {"eval/f1-score": "f1", "eval/f1": "f1", "eval_f1": "f1", "val_f1": "f1", "f1-score": "f1",
                "eval/accuracy": "accuracy", "eval/precision": "precision", "eval/recall": "recall"}

def config_key(param: str) -> str:
    key = PARAM_KEYS.get(param, param)
    if "." not in key:
        raise ConfigError(f"sweep.parameters: unknown parameter {param!r} (use a dotted config key such as "
                          f"train.learning_rate, or one of {', '.join(sorted(PARAM_KEYS))})")
    return key


def metric_key(name: str | None, task: str | None = None) -> str:
    """The val metric a sweep optimises: `name` (W&B spellings such as eval/f1-score accepted) checked against
    `task` (None: single_label), or the task's primary metric when `name` is None. Raises `ConfigError`."""
    key = METRIC_NAMES.get(name, name) if name is not None else None
    if key == "loss":
        raise ConfigError("sweep.metric.name: loss is not a sweep objective; use one of the task's metrics "
                          f"({', '.join(TASK_METRICS[task or 'single_label'])})")
    return resolve_metric(task, key, "sweep.metric.name")


def metric_goal(metric: str, goal: str | None) -> str:
    """`goal` (maximize / minimize), or the metric's own direction when None."""
    return goal or ("maximize" if greater_is_better(metric) else "minimize")


# --------------------------------------------------------------------------- search space
def to_distributions(parameters: dict) -> tuple[dict, dict]:
    """W&B `parameters` -> (Optuna distributions by config key, fixed values by config key)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    dists, fixed = {}, {}
    for name, spec in parameters.items():
        key = config_key(name)
        where = f"sweep.parameters.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a mapping such as {{values: [...]}}")
        if "value" in spec:
            fixed[key] = spec["value"]
            continue
        dist = spec.get("distribution", "categorical" if "values" in spec else None)
        try:
            if dist == "categorical":
                values = spec["values"]
                if not isinstance(values, list) or not values:
                    raise ConfigError(f"{where}.values: expected a non-empty list")
                dists[key] = CategoricalDistribution(values)
            elif dist == "uniform":
                dists[key] = FloatDistribution(float(spec["min"]), float(spec["max"]))
            elif dist == "log_uniform_values":
                dists[key] = FloatDistribution(float(spec["min"]), float(spec["max"]), log=True)
            elif dist == "log_uniform":  # W&B: min/max are natural-log exponents
                dists[key] = FloatDistribution(*_exp_bounds(where, float(spec["min"]), float(spec["max"])), log=True)
            elif dist == "int_uniform":
                dists[key] = IntDistribution(int(spec["min"]), int(spec["max"]))
            elif dist == "q_uniform":
                dists[key] = FloatDistribution(float(spec["min"]), float(spec["max"]), step=float(spec.get("q", 1.0)))
            elif dist == "q_log_uniform_values":
                dists[key] = FloatDistribution(float(spec["min"]), float(spec["max"]), log=True)
            else:
                raise ConfigError(f"{where}: unsupported distribution {dist!r} (categorical, uniform, "
                                  "log_uniform_values, log_uniform, int_uniform, q_uniform)")
        except KeyError as e:
            raise ConfigError(f"{where}: missing {e.args[0]!r}") from e
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where}: {str(e).splitlines()[0]}") from e
    if not dists:
        raise ConfigError("sweep.parameters: nothing to search (every parameter has a fixed `value`)")
    return dists, fixed


# exp(709.78) is the largest float64; a sampled value far beyond any hyperparameter's range
_MAX_EXPONENT = 700.0


def _exp_bounds(where: str, lo: float, hi: float) -> tuple[float, float]:
    """W&B `log_uniform` bounds are exponents (e^min .. e^max): bounds that look like values overflow."""
    if max(abs(lo), abs(hi)) > _MAX_EXPONENT:
        raise ConfigError(f"{where}: log_uniform takes natural-log exponents (e^{lo:g} .. e^{hi:g} is out of "
                          f"floating-point range); for bounds given as values use distribution: log_uniform_values")
    if lo >= 0:  # e^0 = 1 and up: log-scale hyperparameters (rates, decays) are far below 1
        warnings.warn(f"{where}: log_uniform takes natural-log exponents: e^{lo:g} .. e^{hi:g} = "
                      f"{math.exp(lo):.4g} .. {math.exp(hi):.4g}; for bounds given as values use "
                      "distribution: log_uniform_values", LorabenchWarning, stacklevel=2)
    return math.exp(lo), math.exp(hi)


def validate_space(base: ExperimentConfig, dists: dict, fixed: dict) -> list[tuple[str, Any, ExperimentConfig]]:
    """Check the whole space before any trial runs: every distribution's low and high end (and every
    categorical choice) must make a valid experiment config. Raises `ConfigError` naming the parameter.
    Returns (parameter, value, trial config) of every end, for the checks that need the model
    (`recipes.sweep.check_sweep`)."""
    ends = []
    for key, dist in dists.items():
        for value in list(dist.choices) if hasattr(dist, "choices") else [dist.low, dist.high]:
            try:
                ends.append((key, value, trial_config(base, {**fixed, key: value})))
            except ConfigError as e:
                raise ConfigError(f"sweep.parameters ({key} = {value!r}): {e}") from e
    return ends


def trial_config(base: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
    """The base experiment with `values` (config key -> value) applied."""
    raw = to_dict(base)
    for key, value in values.items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return from_dict(ExperimentConfig, raw)
