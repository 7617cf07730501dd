"""models: the per-architecture table (registry), where weights come from (sources; pip packages that ship
weights: packages), building a classifier with LoRA (build), the one precision-and-device decision of a run
(precision), tiny random models for tests (testing), and no code from the Hub unless asked (hub_code).

The names below load on first use: checking a model name (`sources`) must not import torch or peft."""
from lorabench._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "lorabench.models.build": ("Built", "attach_lora", "build_classifier", "count_params", "load_model_config",
                               "load_tokenizer", "token_lengths"),
    "lorabench.models.registry": ("ARCHITECTURES", "Arch", "arch_for", "position_limit"),
    "lorabench.models.sources": ("BUILTINS", "Builtin", "Source", "builtin_available", "builtin_status", "cache_dir",
                                 "check_model_name", "install_builtin", "resolve_source"),
    "lorabench.models.testing": ("tiny_tokenizer",),
})
