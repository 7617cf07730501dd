"""The class-weighted loss, normalised over the whole optimiser step.
"""
from __future__ import annotations


class WeightedCrossEntropy:
    """Class-weighted cross-entropy for the Trainer's `compute_loss_func` hook.

    The loss of a batch is torch's `CrossEntropyLoss(weight=w)` (as in the study): the weighted mean
    sum_i w[y_i] * nll_i / sum_i w[y_i]. A weighted mean is not additive over micro-batches, so the
    Trainer (`LorabenchTrainer._get_num_items_in_batch`) passes the summed weight of the whole optimiser
    step (every micro-batch of the accumulation, every process) as `num_items_in_batch`, and each
    micro-batch returns its weighted sum divided by it: the accumulated gradient then equals the
    full-batch weighted mean's, whatever the split into micro-batches. Without weights the divisor is
    the row count (the Trainer's own). `weights`: one float per label id, or None.
    """

    def __init__(self, weights: list[float] | None):
        self.weights = weights
        self._cache: dict = {}

    def _w(self, device, dtype):
        import torch
        key = (device, dtype)
        if key not in self._cache:
            self._cache[key] = torch.tensor(self.weights, device=device, dtype=dtype)
        return self._cache[key]

    def weight_sum(self, labels):
        """Summed class weight of `labels` (int tensor, any shape) as a float64 scalar tensor."""
        import torch
        return self._w(labels.device, torch.float64)[labels.view(-1)].sum()

    def __call__(self, outputs, labels, num_items_in_batch=None):
        import torch.nn.functional as F
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]  # (batch, num_labels)
        logits = logits.float()
        labels = labels.view(-1).to(logits.device)  # model parallel: the head may sit on another GPU than the inputs
        if num_items_in_batch is None:  # one batch on its own: the weighted mean
            weight = self._w(logits.device, logits.dtype) if self.weights is not None else None
            return F.cross_entropy(logits, labels, weight=weight)
        nll = F.cross_entropy(logits, labels, reduction="none")  # (batch,)
        if self.weights is not None:
            nll = nll * self._w(logits.device, logits.dtype)[labels]
        n = num_items_in_batch.to(logits.device, logits.dtype) if hasattr(num_items_in_batch, "to") \
            else float(num_items_in_batch)
        return nll.sum() / n


class MultiLabelBCE:
    """multi_label: binary cross-entropy with logits, each label's positives weighted by `pos_weights` (one float per
    label, torch's `BCEWithLogitsLoss(pos_weight=...)`; None: 1), averaged over row-label pairs. The Trainer passes
    the row-label pairs of the whole optimiser step as `num_items_in_batch` (`LorabenchTrainer`), so accumulation
    and processes make the same update as one large batch."""

    def __init__(self, pos_weights: list[float] | None):
        self.pos_weights = pos_weights

    def __call__(self, outputs, labels, num_items_in_batch=None):
        import torch
        import torch.nn.functional as F
        logits = (outputs["logits"] if isinstance(outputs, dict) else outputs[0]).float()  # (batch, labels)
        target = labels.to(logits.device).float().view_as(logits)
        pw = torch.tensor(self.pos_weights, device=logits.device, dtype=logits.dtype) \
            if self.pos_weights is not None else None
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw, reduction="sum")
        n = num_items_in_batch if num_items_in_batch is not None else target.numel()
        return loss / (n.to(logits.device, logits.dtype) if hasattr(n, "to") else float(n))


class RegressionLoss:
    """regression: mean squared error (`mse`) or Huber loss with delta 1 (`huber`) of the single output against the
    target, averaged over the rows of the whole optimiser step (`num_items_in_batch`, as `MultiLabelBCE`)."""

    def __init__(self, kind: str = "mse"):
        self.kind = kind

    def __call__(self, outputs, labels, num_items_in_batch=None):
        import torch.nn.functional as F
        pred = (outputs["logits"] if isinstance(outputs, dict) else outputs[0]).float().view(-1)  # (batch,)
        target = labels.to(pred.device).float().view(-1)
        fn = F.huber_loss if self.kind == "huber" else F.mse_loss
        loss = fn(pred, target, reduction="sum")
        n = num_items_in_batch if num_items_in_batch is not None else target.numel()
        return loss / (n.to(pred.device, pred.dtype) if hasattr(n, "to") else float(n))


def loss_for(task: str, weights: list[float] | None, regression_loss: str = "mse"):
    """The Trainer's `compute_loss_func` for `task`: class-weighted cross-entropy, per-label weighted BCE, or
    MSE / Huber."""
    if task == "multi_label":
        return MultiLabelBCE(weights)
    if task == "regression":
        return RegressionLoss(regression_loss)
    return WeightedCrossEntropy(weights)
