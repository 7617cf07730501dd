"""lorabench: LoRA fine-tuning and head-to-head comparison of text classifiers.

The Python API (README, "Python API"): `train`, `refit`, `compare`, `sweep`, `load_run`, `load_config`, and the
types they return. Importing lorabench is cheap: the API (and the heavy libraries) load on first use.
"""
from lorabench._lazy import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__, _names = lazy_exports(__name__, {
    "lorabench.api": ("Comparison", "EnsembleRun", "Run", "SweepResult", "compare", "load_config", "load_run", "refit",
                      "sweep", "train"),
    "lorabench.runs.record": ("RunRecord", "RunStatus"),
})
__all__ = _names + ["__version__"]
