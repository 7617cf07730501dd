"""What every tracker backend shares: the numbers a run logs (`summary`, `flatten`), URL redaction, a comparison's
or sweep's group (`GroupInfo`, the current one) and the context a backend starts a run in (`RunContext`)."""
from __future__ import annotations

import contextvars
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GROUP_ENV = "LORABENCH_TRACKING_GROUP"      # a sweep's group, for its worker processes


def json_safe(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def flatten(tree: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """{"train": {"seed": 42}} -> {"train.seed": 42}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        out.update(flatten(v, key, sep) if isinstance(v, dict) and v else {key: v})
    return out


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def summary(record: dict) -> dict[str, float]:
    """The numbers a finished run adds to its tracker runs: final metrics per split (`final/val/f1`,
    `final/test_at_threshold/recall`...), per-class results, confusion-matrix counts, MCC and AUCs
    (`final/val/class/<name>/f1`, `final/val/confusion/<true>/<predicted>`), parameter counts (`params/...`),
    timings, peak memory and throughput (`run/...`)."""
    out: dict[str, float] = {}
    for split, m in (record.get("metrics") or {}).items():
        out.update({f"final/{split}/{k}": v for k, v in (m or {}).items() if is_number(v)})
    for split, d in (record.get("evaluation") or {}).items():
        out.update({f"final/{split}/{k}": v for k, v in d.items() if is_number(v)})
        for name, m in (d.get("per_class") or d.get("per_label") or {}).items():  # per_label: multi_label
            out.update({f"final/{split}/class/{name}/{k}": v for k, v in m.items() if is_number(v)})
        labels = d.get("labels") or []
        for i, row in enumerate(d.get("confusion_matrix") or []):
            for j, n in enumerate(row):
                if i < len(labels) and j < len(labels):
                    out[f"final/{split}/confusion/{labels[i]}/{labels[j]}"] = n
    out.update({f"params/{k}": v for k, v in (record.get("params") or {}).items() if is_number(v)})
    for k in ("train_seconds", "pure_train_seconds", "eval_seconds", "load_seconds", "peak_memory_mb",
              "best_epoch", "epochs_run", "steps", "threshold"):
        if is_number(record.get(k)):
            out[f"run/{k}"] = record[k]
    out.update({f"run/{k}": v for k, v in (record.get("throughput") or {}).items() if is_number(v)})
    return out


def redact_url(url: str | None) -> str | None:
    """A URL with its password (user part, or a query key naming a password/token/secret/key) masked."""
    if not url:
        return url
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
    try:
        p = urlsplit(url)
        netloc, pairs = p.netloc, parse_qsl(p.query, keep_blank_values=True)
        secret_query = any(re.search("pass|token|secret|key", k, re.I) for k, _ in pairs)
        if not ("@" in netloc and ":" in netloc.split("@", 1)[0]) and not secret_query:
            return url
        if "@" in netloc and ":" in netloc.split("@", 1)[0]:
            netloc = netloc.split(":", 1)[0] + ":***@" + netloc.rsplit("@", 1)[1]
        query = urlencode([(k, "***" if re.search("pass|token|secret|key", k, re.I) else v) for k, v in pairs],
                          safe="*")
        return urlunsplit((p.scheme, netloc, p.path, query, p.fragment))
    except ValueError:
        return url.split("://", 1)[0] + "://***" if "://" in url else "***"


def metric_key(key: str) -> str:
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", key)  # MLflow's allowed characters


def error_line(error: BaseException) -> str:
    """An error as run.json's `error`: its type and first line."""
    return f"{type(error).__name__}: {error}".splitlines()[0]


@dataclass
class GroupInfo:
    """What a run needs of its group; JSON-able (a sweep passes it to its worker processes)."""
    kind: str                          # compare | sweep
    name: str                          # the comparison's or study's name: W&B group, trackio project
    folder: str                        # the compare / sweep folder
    trackers: list[str] = field(default_factory=list)
    mlflow_uri: str | None = None      # the store lorabench chose (None: the user's)
    mlflow_experiment: str | None = None
    mlflow_parent: str | None = None


_GROUP: contextvars.ContextVar[GroupInfo | None] = contextvars.ContextVar("lorabench_tracking_group", default=None)


def current_group() -> GroupInfo | None:
    """The group of the compare or sweep this process runs for (None for a lone run)."""
    g = _GROUP.get()
    if g is None and os.environ.get(GROUP_ENV):
        g = GroupInfo(**json.loads(os.environ[GROUP_ENV]))
    return g


def child_env() -> dict[str, str]:
    """Environment for a worker process that runs the current group's runs (a sweep's --workers)."""
    g = _GROUP.get()
    return {GROUP_ENV: json.dumps(asdict(g))} if g else {}


@dataclass
class RunContext:
    """What a backend starts a run with: where it lands, its name and kind (train, trial, ...), its group, the
    project, the resolved config (JSON-able), the folder it is built in, and the ids of a resumed run's tracker runs."""
    out_dir: Path  # where the run folder lands (it is built in `folder`)
    name: str
    kind: str
    group: GroupInfo | None
    project: str
    config: dict
    folder: Path
    saved: dict


