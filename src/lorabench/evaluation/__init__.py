"""evaluation: how predictions are scored (metrics: F1, precision, recall, accuracy, MCC, AUCs, per-class results,
thresholds), from labels and probabilities alone: no model, no training."""
