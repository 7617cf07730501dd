"""models: the per-architecture table (registry), where weights come from (sources; pip packages that ship
weights: packages), building a classifier with LoRA (build), tiny random models for tests (testing)."""
from lorabench.models.build import (Built, attach_lora, build_classifier, count_params, load_model_config,
                                    load_tokenizer, torch_dtype)
from lorabench.models.registry import ARCHITECTURES, Arch, arch_for, position_limit
from lorabench.models.sources import (BUILTINS, Builtin, Source, builtin_available, builtin_status, cache_dir,
                                      install_builtin, resolve_source)
from lorabench.models.testing import tiny_tokenizer

__all__ = ["ARCHITECTURES", "Arch", "BUILTINS", "Built", "Builtin", "Source", "arch_for", "attach_lora",
           "build_classifier", "builtin_available", "builtin_status", "cache_dir", "count_params", "install_builtin",
           "load_model_config", "load_tokenizer",
           "position_limit", "resolve_source", "tiny_tokenizer", "torch_dtype"]
