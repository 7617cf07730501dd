"""The Python API (issue 13): the README's example runs as written, and a call leaves the caller's
process state as it was."""
import json
import logging
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

import lorabench
from lorabench.runs.record import SCHEMA_VERSION

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example_runs_and_returns_one_row_per_model(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    result = scope["result"]
    assert isinstance(result.table, pd.DataFrame) and result.table["label"].tolist() == [
        "tfidf-logreg", "tiny BERT", "Ensemble: mean of top 2"]  # the ensemble row (compare's ensemble_top)
    assert result.table["kind"].tolist() == ["model", "model", "ensemble"]
    assert result.table["val_f1"].between(0, 1).all() and result.report_path.is_file()
    assert [r.label for r in result.records] == ["tfidf-logreg", "tiny BERT"]
    assert all(r.status == lorabench.RunStatus.COMPLETED and r.schema_version == SCHEMA_VERSION for r in result.records)
    pred = scope["run"].predict(["forest fire near la ronge sask canada", "what a lovely day"])
    assert list(pred.columns) == ["label", "label_name", "probability", "prob_not_disaster", "prob_disaster"]
    assert len(pred) == 2 and set(pred["label"]) <= {0, 1}
    assert (pred[["prob_not_disaster", "prob_disaster"]].sum(axis=1) - 1).abs().max() < 1e-9


def _state():
    import matplotlib
    from transformers import AttentionInterface
    from transformers.utils import logging as tlog
    return {"filters": list(warnings.filters), "root": logging.getLogger().level,
            "loggers": {n: logging.getLogger(n).level for n in ("transformers", "datasets", "peft", "optuna")},
            "backend": matplotlib.get_backend(), "bars": tlog.is_progress_bar_enabled(),
            "attention": sorted(AttentionInterface._global_mapping)}


@pytest.mark.system
def test_api_calls_leave_the_callers_process_state_as_it_was(tmp_path):
    """Run in a fresh interpreter whose state differs from the libraries' defaults, as a notebook's might."""
    script = f"""
import json, logging, warnings, matplotlib
matplotlib.use("svg")
import transformers, datasets, peft
warnings.simplefilter("always")
logging.getLogger().setLevel(logging.DEBUG)
logging.getLogger("transformers").setLevel(logging.INFO)
import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_api import _state
import lorabench
before = _state()
rec = lorabench.train({{"name": "s", "data": {{"max_train_samples": 120, "max_eval_samples": 40}},
                        "model": {{"name": "tiny-bert", "max_length": 32}},
                        "train": {{"epochs": 1, "batch_size": 16}}}}, output_dir={str(tmp_path / "run")!r})
after_train = _state()
lorabench.compare({{"name": "c", "data": {{"max_train_samples": 120, "max_eval_samples": 40}},
                   "models": [{{"name": "tfidf-logreg"}}]}}, output_dir={str(tmp_path / "cmp")!r})
after_compare = _state()
print(json.dumps({{"same_train": before == after_train, "same_compare": before == after_compare,
                  "before": str(before), "after": str(after_compare), "f1": rec.val["f1"]}}))
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["same_train"] and out["same_compare"], (out["before"], out["after"])
    assert 0 <= out["f1"] <= 1


def test_config_as_dict_object_or_path_and_a_bad_one(tmp_path):
    from lorabench.config import ExperimentConfig
    from lorabench.errors import ConfigError
    d = {"name": "x", "train": {"epochs": 2}}
    (tmp_path / "c.yaml").write_text("name: x\ntrain: {epochs: 2}\n")
    a = lorabench.load_config(d)
    b = lorabench.load_config(tmp_path / "c.yaml")
    c = lorabench.load_config(a, overrides=["train.epochs=3"])
    assert a == b and isinstance(a, ExperimentConfig) and c.train.epochs == 3
    with pytest.raises(ConfigError) as e:
        lorabench.load_config({"train": {"epochs": "many"}})
    assert "train.epochs" in str(e.value)
    with pytest.raises(ConfigError):
        lorabench.load_config(42)


def test_importing_lorabench_loads_no_heavy_library():
    p = subprocess.run([sys.executable, "-c", "import sys, lorabench; print(sorted(m for m in "
                        "('torch', 'transformers', 'pandas', 'peft') if m in sys.modules))"], capture_output=True, text=True)
    assert p.stdout.strip() == "[]", p.stdout + p.stderr
