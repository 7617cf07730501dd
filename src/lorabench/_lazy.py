"""Package exports that load on first use: `import lorabench` (or one of its packages) stays cheap, and a module
that imports torch or peft loads only when one of its names is asked for."""
from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, names: dict[str, tuple[str, ...]]) -> tuple[Callable, Callable, list[str]]:
    """(`__getattr__`, `__dir__`, `__all__`) for a package whose `names` map a module to the names it exports."""
    where = {name: module for module, exported in names.items() for name in exported}

    def __getattr__(name: str):
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(where)
    return __getattr__, __dir__, sorted(where)
