"""ONNX: `lorabench export RUN OUT --format onnx [--quantize int8]` and the `onnx` backend of predict and serve.

The run's classifier, LoRA merged into float32 weights, is traced by torch's TorchScript-based exporter
(`torch.onnx.export(..., dynamo=False)`, opset 18) with batch and sequence dynamic; a decoder reads its last real
token as in training (transformers' sequence-classification head finds it from the pad token, traced as graph ops).
`--quantize int8`: onnxruntime's dynamic quantization (int8 weights, activations quantized per batch at run time).
Before anything is written, the export is checked against PyTorch on the run's val rows: the largest probability
difference (float32: must stay below `MAX_PROB_DIFF`), and the change of the task's val metrics (int8), printed and
recorded in `onnx.json`. An ONNX folder holds `model.onnx`, the tokenizer, `config.json` (with `problem_type`),
`lorabench_run.json`, `onnx.json` and a model card; `predict` and `serve` read it with onnxruntime, without torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lorabench.config.tasks import primary
from lorabench.evaluation.tasks import decide, score

ONNX_FILE = "model.onnx"
ONNX_INFO = "onnx.json"
OPSET = 18
MAX_PROB_DIFF = 1e-4  # float32 export: the largest |P_onnx - P_torch| on the val rows allowed
CHECK_ROWS = 2000     # val rows the export is checked on (the first ones, in split order)


def is_onnx_export(path: str | Path) -> bool:
    """True for a folder `export --format onnx` wrote."""
    p = Path(path)
    return (p / ONNX_FILE).is_file() and (p / "lorabench_run.json").is_file()


class OnnxModel:
    """An onnxruntime session of an exported classifier: `logits(batch)` -> (rows, outputs) float32 for a dict of
    int64 arrays (input_ids, attention_mask[, token_type_ids]), as the exported graph names them."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only: the graph optimiser's notes are not the user's
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """`batch`'s logits; a `token_type_ids` input the batch lacks is zeros (what the PyTorch model assumes
        when it is not given: every token in segment 0)."""
        feed = {k: np.asarray(batch[k] if k in batch else np.zeros_like(batch["input_ids"]), dtype=np.int64)
                for k in self.input_names}
        return self.session.run(None, feed)[0]


def onnx_wrapper(model, names: list[str]):
    """`model` (a transformers sequence classifier) as a torch module of its positional input tensors `names`,
    returning the logits only: what `torch.onnx.export` traces."""
    import torch

    class Logits(torch.nn.Module):
        """The classifier as a function of its input tensors, returning logits only (what ONNX exports)."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs))).logits
    return Logits().eval()


def check_outputs(task: str, threshold, labels, want: np.ndarray, got: np.ndarray, labelled: bool) -> dict[str, Any]:
    """How an export's outputs `got` differ from PyTorch's `want` on the same rows ((rows, outputs) float64:
    probabilities; regression: values): the largest difference, the share of rows whose decision (at the run's
    `threshold`) changes, and with `labelled` rows the task's metrics of both and the change of its primary one."""
    diff = float(np.abs(got - want).max()) if len(want) else 0.0
    a, b = decide(task, want, threshold), decide(task, got, threshold)
    changed = float(np.mean(np.any(a != b, axis=-1) if a.ndim > 1 else (a != b))) if task != "regression" else None
    out: dict[str, Any] = {"rows": int(len(want)), "max_probability_difference": diff, "labels_changed": changed}
    if labelled:
        k = want.shape[1]
        m_torch, m_onnx = score(task, labels, want, k), score(task, labels, got, k)
        head = primary(task)
        out.update(metric=head, metrics_torch=m_torch, metrics_onnx=m_onnx,
                   metric_change=None if m_torch.get(head) is None else m_onnx[head] - m_torch[head])
    return out


def card(info: dict) -> str:
    """The model card's ONNX section from `onnx.json`'s content."""
    c = info["check"]
    change = (f"; val {c['metric']} {c['metrics_torch'][c['metric']]:.4f} -> {c['metrics_onnx'][c['metric']]:.4f} "
              f"({c['metric_change']:+.4f})") if c.get("metric") else ""
    return (f"\n## ONNX\n`{ONNX_FILE}`: opset {info['opset']}, inputs {info['inputs']}, "
            f"{'int8 dynamic quantization (onnxruntime)' if info['quantize'] else 'float32'}. Checked against PyTorch "
            f"on {c['rows']} val rows: largest probability difference {c['max_probability_difference']:.2e}"
            + (f", labels changed on {c['labels_changed']:.2%} of rows" if c.get("labels_changed") is not None else "")
            + change + ".\n\n```python\nimport onnxruntime, numpy as np\nfrom transformers import AutoTokenizer\n"
            "tok = AutoTokenizer.from_pretrained(folder)\nsession = onnxruntime.InferenceSession(f'{folder}/model.onnx')\n"
            "enc = tok(['some text'], return_tensors='np')\nlogits = session.run(None, {k: enc[k] for k in "
            "[i.name for i in session.get_inputs()]})[0]\n```\n")
