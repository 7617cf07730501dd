"""models: the per-architecture table (registry), where weights come from (sources; pip packages that ship
weights: packages), building a classifier with LoRA (build), tiny random models for tests (testing), and no code
from the Hub unless asked (hub_code).

The names below load on first use: importing `lorabench.models.sources` (to check a model name) must not import
the registry, whose table asks peft (and so torch) for LoRA defaults."""
import importlib

_NAMES = {
    "lorabench.models.build": ("Built", "attach_lora", "build_classifier", "count_params", "load_model_config",
                               "load_tokenizer", "token_lengths"),
    "lorabench.models.registry": ("ARCHITECTURES", "Arch", "arch_for", "position_limit"),
    "lorabench.models.sources": ("BUILTINS", "Builtin", "Source", "builtin_available", "builtin_status", "cache_dir",
                                 "check_model_name", "install_builtin", "resolve_source"),
    "lorabench.models.testing": ("tiny_tokenizer",),
}
_WHERE = {name: module for module, names in _NAMES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'lorabench.models' has no attribute {name!r}")


def __dir__():
    return __all__
