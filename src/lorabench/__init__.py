"""lorabench: LoRA fine-tuning and head-to-head comparison of text classifiers."""
__version__ = "0.1.0"
