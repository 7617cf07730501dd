"""The one precision-and-device decision of a run, made once from the config and the hardware, and used
by building, training, predict and export (nothing else guesses dtypes or devices)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from lorabench.config.schema import ModelConfig
from lorabench.errors import ConfigError


@dataclass(frozen=True)
class Precision:
    """How a run holds and computes its numbers.

    device: "cuda" or "cpu". weights_dtype: the frozen (pretrained) weights, "float32" | "bfloat16" |
    "float16". trainable_dtype: LoRA and head weights, always "float32" (optimizer states and the grad
    scaler need it). autocast: mixed precision of the forward/backward, "bf16" | "fp16" | None.
    grad_scaler: loss scaling, on with fp16 autocast. quantization: the bitsandbytes settings of the
    frozen weights (`quantization_config`), None when they are not quantized.
    """
    device: str
    weights_dtype: str
    trainable_dtype: str = "float32"
    autocast: str | None = None
    grad_scaler: bool = False
    quantization: dict | None = None

    @property
    def weights_torch_dtype(self):
        import torch
        return getattr(torch, self.weights_dtype)

    @property
    def trainable_torch_dtype(self):
        import torch
        return getattr(torch, self.trainable_dtype)

    def training_arguments(self) -> dict:
        """The TrainingArguments this decision implies (device and mixed precision)."""
        return {"use_cpu": self.device == "cpu", "bf16": self.autocast == "bf16", "fp16": self.autocast == "fp16"}

    def to_dict(self) -> dict:
        return asdict(self)


def decide(cfg: ModelConfig, *, cuda: bool | None = None, bf16_supported: bool | None = None,
           full_finetune: bool = False, inference: bool = False) -> Precision:
    """The decision for `cfg` on this machine (`cuda` / `bf16_supported` override the hardware probe, for
    tests and planning). `model.dtype: auto`: bfloat16 weights and bf16 autocast on GPUs that support it,
    float16 + fp16 autocast + grad scaler on older GPUs, float32 on CPU (this CPU has no bf16 units: bf16
    ran 2.2x slower than fp32 here, ../shared/PITFALLS.md). An explicit dtype is honoured; a half-precision
    dtype also turns on its autocast (bf16 works on CPU too, slowly; fp16 needs a GPU and raises
    `ConfigError` on CPU). `full_finetune`: every weight trains, so every weight is
    kept in float32 (the optimizer's master copy; the fp16 grad scaler refuses fp16 gradients) and the
    GPU's half precision comes from autocast alone. `inference` (predict, export): a float16 run loads in
    float32 on a machine without a GPU instead of raising."""
    if cuda is None or bf16_supported is None:
        import torch
        cuda = torch.cuda.is_available() if cuda is None else cuda
        bf16_supported = (cuda and torch.cuda.is_bf16_supported()) if bf16_supported is None else bf16_supported
    if cfg.dtype == "auto":
        weights = ("bfloat16" if bf16_supported else "float16") if cuda else "float32"
    else:
        weights = cfg.dtype
    if weights == "float16" and not cuda:
        if not inference:
            raise ConfigError("model.dtype: float16 training needs a GPU (fp16 autocast and its grad scaler are "
                              "CUDA features); on CPU use bfloat16 or float32")
        weights = "float32"
    autocast = None
    if weights != "float32":  # half-precision frozen weights meet fp32 LoRA/head weights: autocast joins them
        autocast = "bf16" if weights == "bfloat16" else "fp16"
    if full_finetune:
        weights = "float32"
    return Precision(device="cuda" if cuda else "cpu", weights_dtype=weights, autocast=autocast,
                     grad_scaler=autocast == "fp16", quantization=quantization_config(cfg.quantization, weights))


def quantization_config(kind: str, compute_dtype: str) -> dict | None:
    """The bitsandbytes settings of `model.quantization` (kwargs of transformers' BitsAndBytesConfig),
    None for `none`. 4bit = QLoRA's recipe (Dettmers et al. 2023, arXiv:2305.14314): NF4 with double
    quantization, matmuls in `compute_dtype` (the run's precision: bf16 on recent GPUs, fp16 on older ones,
    fp32 on CPU). 8bit = LLM.int8 (arXiv:2208.07339). The classification head is never quantized (a
    quantized head cannot train, peft#1720): the builder adds it to `llm_int8_skip_modules`."""
    if kind == "4bit":
        return {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                "bnb_4bit_compute_dtype": compute_dtype}
    if kind == "8bit":
        return {"load_in_8bit": True}
    return None
