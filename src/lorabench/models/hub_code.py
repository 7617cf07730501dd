"""No code from the Hub unless the user asks: the imports and loading options that keep compiled kernels
(the `kernels` package) from being fetched and run.

Two libraries reach for the Hub on their own (seen with transformers 5.25, peft 0.21, bitsandbytes 0.50.2,
kernels 0.19 on a CPU with AVX512-BF16; ../shared/PITFALLS.md):

- bitsandbytes' CPU backend calls `kernels.get_kernel("kernels-community/quantization-bitsandbytes")` when it is
  imported, and peft imports bitsandbytes whenever it is installed: when peft is imported (so does anything
  importing transformers' Trainer, which imports peft) and when it attaches LoRA. `import_peft` and
  `without_bitsandbytes` (around a run that is not quantized) keep it out, so bitsandbytes is imported only by
  a run that asks for quantization, and `import_bitsandbytes` imports it with `kernels` hidden unless
  `model.trust_hub_kernels` is set: it then uses its own CPU code.
- transformers 5.25 `from_pretrained` turns `use_kernels` on by default (layers replaced by Hub kernels where a
  mapping exists for the device): `loading_options` passes `use_kernels=model.trust_hub_kernels`.

Hiding a module is `sys.modules[name] = None` for the length of one import statement (`import name` then raises
ImportError, as if it were not installed), restored right after: nothing of the caller's process changes.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

from lorabench import console

_MISSING = object()


@contextlib.contextmanager
def hidden(*names: str) -> Iterator[None]:
    """Inside the block, `import <name>` (and its submodules) raises ImportError for each of `names`, whether or
    not it was imported before; on exit `sys.modules` holds exactly what it held before for those names."""
    saved = {n: sys.modules.get(n, _MISSING) for n in names}
    for n in names:
        sys.modules[n] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for n, module in saved.items():
            if module is _MISSING:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = module


def _forget_answers(*modules: str, about: tuple[str, ...]) -> None:
    """Clear the cached "is it installed" answers (functools caches) that mention `about` in their name, in
    the already imported `modules`: an answer given while a package was hidden must not outlive the hiding."""
    for name in modules:
        module = sys.modules.get(name)
        for attr in dir(module) if module is not None else ():
            fn = getattr(module, attr, None)
            if callable(getattr(fn, "cache_clear", None)) and any(a in attr.lower() for a in about):
                fn.cache_clear()


@contextlib.contextmanager
def without_bitsandbytes(keep_out: bool = True) -> Iterator[None]:
    """Inside the block bitsandbytes looks uninstalled to peft and transformers (peft imports it when it is
    imported and whenever it attaches LoRA, to dispatch quantized layers): for everything a run that is not
    quantized does. A no-op with `keep_out=False` (a quantized run) or when bitsandbytes is already imported.
    The libraries' cached "is bitsandbytes installed" answers are cleared on entry and on exit, so no answer
    given inside outlives the block."""
    if not keep_out or sys.modules.get("bitsandbytes") is not None:
        yield
        return
    _forget_answers("peft.import_utils", "transformers.utils.import_utils", about=("bnb", "bitsandbytes"))
    try:
        with hidden("bitsandbytes"):
            yield
    finally:
        _forget_answers("peft.import_utils", "transformers.utils.import_utils", about=("bnb", "bitsandbytes"))


def import_peft() -> ModuleType:
    """Import peft (and with it transformers' Trainer stack, which imports peft) without importing
    bitsandbytes (`without_bitsandbytes`). A no-op when peft is already imported. Returns the peft module."""
    if sys.modules.get("peft") is not None:
        return sys.modules["peft"]
    with without_bitsandbytes():
        return importlib.import_module("peft")


def import_bitsandbytes(trust_hub_kernels: bool) -> ModuleType:
    """Import bitsandbytes for a quantized run. Unless `trust_hub_kernels`, with the `kernels` package hidden, so
    that its CPU backend cannot fetch and load `kernels-community/quantization-bitsandbytes` from the Hub (it
    logs that it falls back to its own kernels, which lorabench's QLoRA tests train through). Raises
    ImportError when bitsandbytes is not installed."""
    module = sys.modules.get("bitsandbytes")
    if module is not None:
        return module
    with contextlib.nullcontext() if trust_hub_kernels else hidden("kernels"):
        module = importlib.import_module("bitsandbytes")
    if not trust_hub_kernels:
        console.note("lorabench: bitsandbytes imported without Hub kernels (model.trust_hub_kernels is off): its own "
                     "code runs the 4-bit/8-bit layers")
    return module


def loading_options(trust_hub_kernels: bool) -> dict:
    """Keyword arguments of every `from_pretrained` lorabench calls for model weights: `use_kernels` off unless
    the user trusts Hub kernels (transformers 5.25 defaults it to on)."""
    return {"use_kernels": bool(trust_hub_kernels)}
