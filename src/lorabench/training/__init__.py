"""training: the Trainer with lorabench's pieces (trainer), the weighted loss (loss), length buckets (sampler),
the automatic batch size (batch), resumable checkpoints (checkpoint), what the console shows (progress), the
TF-IDF baseline (baseline). The names below load on first use (the trainer imports torch)."""
from lorabench._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "lorabench.training.checkpoint": ("RESUME_FILE", "last_complete_checkpoint"),
    "lorabench.training.loss": ("WeightedCrossEntropy",),
    "lorabench.training.sampler": ("length_buckets",),
    "lorabench.training.trainer": ("EvalOutput", "TrainResult", "evaluate", "tokenize", "train"),
})
