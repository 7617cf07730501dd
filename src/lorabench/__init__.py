"""lorabench: LoRA fine-tuning and head-to-head comparison of text classifiers.

The Python API (see README, "Python API"): `train`, `refit`, `compare`, `sweep`, `load_run`, `load_config`,
`RunRecord`. Importing lorabench is cheap: the API (and the heavy libraries) load on first use.
"""
__version__ = "0.1.0"

_API = {"Comparison": "lorabench.api", "EnsembleRun": "lorabench.api", "Run": "lorabench.api",
        "SweepResult": "lorabench.api",
        "compare": "lorabench.api", "load_config": "lorabench.api", "load_run": "lorabench.api", "refit": "lorabench.api",
        "sweep": "lorabench.api", "train": "lorabench.api",
        "RunRecord": "lorabench.runs.record", "RunStatus": "lorabench.runs.record"}
__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name in _API:
        import importlib
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'lorabench' has no attribute {name!r}")


def __dir__():
    return __all__
