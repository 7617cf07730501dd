"""training: the Trainer with lorabench's pieces (trainer), the weighted loss (loss), length buckets (sampler),
resumable checkpoints (checkpoint), metrics and threshold (metrics), the TF-IDF baseline (baseline)."""
from lorabench.training.checkpoint import RESUME_FILE, last_complete_checkpoint
from lorabench.training.loss import WeightedCrossEntropy
from lorabench.training.sampler import length_buckets
from lorabench.training.trainer import EvalOutput, TrainResult, evaluate, tokenize, train

__all__ = ["EvalOutput", "RESUME_FILE", "TrainResult", "WeightedCrossEntropy", "evaluate", "last_complete_checkpoint",
           "length_buckets", "tokenize", "train"]
