"""Building a classifier: tokenizer (pad token, padding side), pretrained backbone with a fresh
head, LoRA attached; parameter counts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from lorabench import distributed
from lorabench.config.schema import LoraConfig, ModelConfig
from lorabench.errors import ConfigError, ModelError
from lorabench.models.hub_code import import_bitsandbytes, import_peft, loading_options, without_bitsandbytes
from lorabench.models.precision import Precision, decide
from lorabench.models.registry import Arch, arch_for, position_limit
from lorabench.models.sources import Source, resolve_source


@dataclass
class Built:
    model: Any
    tokenizer: Any
    source: Source
    architecture: str
    arch: Arch
    params: dict
    load_seconds: float
    precision: Precision | None = None   # the run's one precision-and-device decision


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
    """{"trainable", "total": parameter counts (elements), "trainable_pct"}. A peft model is counted by
    peft (`get_nb_trainable_parameters`), which counts a 4-bit weight by its unpacked size."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
    return {"trainable": int(trainable), "total": int(total),
            "trainable_pct": round(100.0 * trainable / total, 4) if total else 0.0}

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


def text_tokenizer(model_cfg: ModelConfig):
    """The model's tokenizer as a run loads it. Raises `ConfigError` when `model.max_length` exceeds the model's
    position limit, `ModelError` when the model cannot be found."""
    src, _, arch = load_model_config(model_cfg)
    return load_tokenizer(src.path, arch, model_cfg)


def token_lengths(texts: list[str], model_cfg: ModelConfig, tokenizer=None) -> list[int]:
    """Tokens per text (no truncation) with the model's tokenizer (`tokenizer`, else `text_tokenizer`'s; raises as
    it)."""
    tok = tokenizer or text_tokenizer(model_cfg)
    return [len(ids) for ids in tok(texts, truncation=False)["input_ids"]]


def build_classifier(cfg: ModelConfig, lora: LoraConfig | None, label_names: list[str], *,
                     seed: int | None = None, precision: Precision | None = None, task: str = "single_label") -> Built:
    """Load the pretrained backbone with a fresh head for `label_names`, then attach LoRA. `task`
    (`config.tasks.TASKS`) sets the head's `problem_type` (regression: `label_names` is the one target's name).

    `precision`: the run's one precision-and-device decision (`models.precision.decide`, made by the pipeline
    before anything is built); decided here only for a caller that builds a model on its own. With `seed`, the
    global RNGs are seeded right before the model is created, after the source was resolved (a cache build on a
    first run draws no numbers from the run: same seed, same head). Raises `ModelError` / `ConfigError` as
    `load_model_config`.
    """
    precision = precision or decide(cfg, full_finetune=lora is None)
    with without_bitsandbytes(keep_out=not precision.quantization):  # no Hub kernel unless asked: models.hub_code
        return _build_classifier(cfg, lora, label_names, seed, precision, task)


PROBLEM_TYPES = {"single_label": "single_label_classification", "multi_label": "multi_label_classification",
                 "regression": "regression"}  # transformers' PretrainedConfig.problem_type


def _build_classifier(cfg: ModelConfig, lora: LoraConfig | None, label_names: list[str], seed: int | None,
                      precision: Precision, task: str = "single_label") -> Built:
    import_peft()
    from transformers import AutoModelForSequenceClassification, set_seed
    t0 = time.perf_counter()
    source, hf_config, arch = load_model_config(cfg, lora)
    tokenizer = load_tokenizer(source.path, arch, cfg)
    hf_config.num_labels = len(label_names)
    hf_config.id2label = dict(enumerate(label_names))
    hf_config.label2id = {n: i for i, n in enumerate(label_names)}
    # the head's task, saved in config.json so an exported model loads and scores as trained anywhere
    hf_config.problem_type = PROBLEM_TYPES[task]
    hf_config.pad_token_id = tokenizer.pad_token_id  # decoders need it in the config, not only the tokenizer
    if seed is not None:
        set_seed(seed)  # the new head's initialisation (and LoRA's) depends on it
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source.path, config=hf_config, **loading_kwargs(cfg, precision, arch))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load weights of {cfg.name!r} from {source.path}: {str(e).splitlines()[0]}") from e
    model.config.pad_token_id = tokenizer.pad_token_id
    if lora is not None:
        if precision.quantization:
            from peft import prepare_model_for_kbit_training

            # peft's k-bit recipe: freeze the base, norms and embeddings in fp32. Gradient checkpointing, when
            # asked for, is switched on by the Trainer (non-reentrant: the reentrant kind fails, transformers#42489)
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
            keep_4bit_trainable_on_cpu(model)
        model = attach_lora(model, lora, arch)
        for p in model.parameters():  # half-precision base: train LoRA + head in fp32 (the grad scaler needs it)
            if p.requires_grad and p.dtype != precision.trainable_torch_dtype:
                p.data = p.data.to(precision.trainable_torch_dtype)
    return Built(model, tokenizer, source, hf_config.model_type, arch, count_params(model),
                 time.perf_counter() - t0, precision)


def keep_4bit_trainable_on_cpu(model) -> int:
    """bitsandbytes 0.50 repacks a CPU 4-bit weight for AVX512-BF16 inference the first time a layer runs in
    eval mode without grad (the per-epoch evaluation) and never unpacks it, so the next training step fails
    ("shape '[32, 0]' is invalid"). Switch that repacking off on every 4-bit layer (the unpacked kernel is
    the one training uses); returns how many layers were touched. No effect on GPUs."""
    n = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def loading_kwargs(cfg: ModelConfig, precision: Precision, arch: Arch) -> dict:
    """`from_pretrained` keyword arguments for the base weights: dtype, the bitsandbytes quantization of
    `precision` (the classification head kept out of it), the device map of `model.device_map` /
    `model.max_memory` (the study's model parallel), remote code, Hub kernels (`model.trust_hub_kernels`) and
    safetensors as configured."""
    kw: dict = {"dtype": precision.weights_torch_dtype, "trust_remote_code": cfg.trust_remote_code,
                "use_safetensors": cfg.use_safetensors, **loading_options(cfg.trust_hub_kernels)}
    if precision.quantization:
        try:  # its Hub kernel only with model.trust_hub_kernels (lorabench.models.hub_code)
            import_bitsandbytes(cfg.trust_hub_kernels)
        except ImportError as e:
            raise ConfigError(f"model.quantization: {cfg.quantization} needs bitsandbytes "
                              "(pip install 'lorabench[qlora]', or pip install bitsandbytes)") from e
        from transformers import BitsAndBytesConfig
        q = dict(precision.quantization)
        if "bnb_4bit_compute_dtype" in q:
            q["bnb_4bit_compute_dtype"] = getattr(__import__("torch"), q["bnb_4bit_compute_dtype"])
        kw["quantization_config"] = BitsAndBytesConfig(
            **q, llm_int8_skip_modules=[arch.head, *arch.head_parts, "classifier", "score"])  # trained: never quantized
    if cfg.device_map is not None:
        import torch
        wanted = list((cfg.max_memory or {}).keys()) + (list(cfg.device_map.values()) if isinstance(cfg.device_map, dict) else [])
        gpus = [d for d in wanted if isinstance(d, int) or str(d).isdigit() or str(d).startswith("cuda")]
        if gpus and not torch.cuda.is_available():
            raise ConfigError(f"model.device_map / model.max_memory name GPU {gpus[0]!r}, but this machine has no GPU")
        kw["device_map"] = cfg.device_map
        if cfg.max_memory:
            kw["max_memory"] = {(int(k) if str(k).isdigit() else k): v for k, v in cfg.max_memory.items()}
    elif precision.quantization and precision.device == "cuda":
        kw["device_map"] = {"": distributed.local_device()}  # bitsandbytes quantizes as it places: this process's GPU
    return kw


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
    """Wrap `model` in peft LoRA (SEQ_CLS): `lora.target_modules`, else the architecture's default; the
    head and `arch.head_parts` are trained in full and saved with the adapter (`modules_to_save`)."""
    import_peft()
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model
    targets = list(lora.target_modules or arch.target_modules)
    if not targets:
        raise ModelError(f"no default LoRA target modules for {type(model).__name__} (peft has none for "
                         f"{getattr(model.config, 'model_type', '?')!r}); set lora.target_modules")
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ModelError(f"lora.target_modules: no module named {missing[0]!r} in this model")
    save = [_head_name(model, arch)] + [m for m in arch.head_parts if hasattr(model, m)]
    peft_cfg = PeftLoraConfig(task_type=TaskType.SEQ_CLS, r=lora.r, lora_alpha=lora.alpha,
                              lora_dropout=lora.dropout, bias=lora.bias, target_modules=targets,
                              modules_to_save=save)
    return get_peft_model(model, peft_cfg)
