"""Every config key takes effect or is refused (issue 22): each key `lorabench keys train` and `lorabench keys compare`
list is set to a value other than its default, the command runs, and the value must reach what the run records
(run.json's resolved config, or for a comparison's own keys what they decide: seeds, refit, notes, ensemble), or
the command must refuse it in one line saying what to do instead. (`seeds: [42]` silently overwrote
`train.seed: 11` in every comparison.) New keys fail `test_the_table_covers_every_key` until given a value here.

The runs are the TF-IDF baseline on 60 made-up rows: what is checked is where a value goes, not what it trains.
"""
import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lorabench.cli import main
from lorabench.config.loading import field_help
from lorabench.config.schema import CompareConfig, ExperimentConfig, ModelConfig

BASE = {"name": "k", "data": {"source": "train.csv"}, "model": {"name": "tfidf-logreg"},
        "train": {"epochs": 1}}
COMPARE_BASE = {"name": "k", "data": {"source": "train.csv"}, "train": {"epochs": 1},
                "models": [{"name": "tfidf-logreg"}]}

# key -> (value, expected): expected None = the value itself in run.json's config at that key; a str = the command
# exits 2 with one line containing it; a callable(run_folder_root) -> bool for what the key decides elsewhere.
TRAIN = {
    "name": ("other", None),
    "data.source": ("copy.csv", None), "data.text": ("{keyword} {text}", None), "data.label": ("target2", None),
    "data.label_names": (["calm", "alarm"], None), "data.val": ("val.csv", None), "data.test": ("test.csv", None),
    "data.train_size": (0.7, None), "data.split_seed": (7, None), "data.folds": (3, None),
    "data.fold": (2, "data.fold picks one fold of data.folds; set data.folds too"),
    "data.class_weights": ("none", None), "data.max_train_samples": (30, None), "data.max_eval_samples": (10, None),
    "data.sample_seed": (3, None), "data.encoding": ("latin-1", None), "data.delimiter": (",", None),
    "data.positive_label": ("0", None), "data.long_text": ("head_tail", None),
    "data.task": ("regression", None), "data.label_separator": ("|", None),
    "train.regression_loss": ("huber", "train.regression_loss: huber applies to regression; this task is single_label"),
    "data.stride": (2, "data.stride is the overlap of long_text: chunk's windows"),
    "model.name": ("tfidf-logreg", None), "model.max_length": (64, None), "model.dtype": ("bfloat16", None),
    "model.trust_remote_code": (True, None), "model.trust_hub_kernels": (True, None),
    "model.use_safetensors": (False, None),
    "model.gguf_file": ("x.gguf", "model.gguf_file names a file inside the model.name folder"),
    "model.kind": ("transformer", "model.kind: 'transformer' contradicts model.name 'tfidf-logreg'"),
    "model.quantization": ("4bit", None), "model.device_map": ("auto", None),
    "model.max_memory": ({"cpu": "4GiB"}, "model.max_memory applies with model.device_map only"),
    "lora": (None, None), "lora.r": (4, None), "lora.alpha": (8, None), "lora.dropout": (0.2, None),
    "lora.bias": ("all", None), "lora.target_modules": (["query"], None),
    "train.learning_rate": (1e-3, None), "train.lr_scheduler": ("linear", None), "train.warmup_ratio": (0.2, None),
    "train.max_grad_norm": (1.0, None), "train.batch_size": (8, None), "train.min_steps_per_epoch": (10, None),
    "train.eval_batch_size": (16, None), "train.gradient_accumulation_steps": (2, None), "train.epochs": (2.0, None),
    "train.max_steps": (5, None), "train.weight_decay": (0.01, None), "train.seed": (11, None),
    "train.early_stopping_patience": (2, None), "train.metric_for_best_model": ("loss", None),
    "train.gradient_checkpointing": (True, None), "train.group_by_length": (False, None),
    "train.pooled_only_last_layer": (False, None), "train.fast_dropout": (False, None),
    "train.torch_compile": (True, None), "train.report_to": (["tensorboard"], None), "train.logging_steps": (10, None),
    "train.dataloader_num_workers": (1, None), "train.threshold": (0.3, None),
    "train.calibration": ("temperature", None), "train.serving_cost": (False, None),
    "label": ("X", None),
}
# a section's own row (`data`, `model`, `train`) is covered by its keys
SECTIONS = {"data", "model", "train", "statistics"}


def rows(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    words = [("fire smoke flames" if t else "happy music summer").split() for t in y]
    return pd.DataFrame({"id": [f"{i:03d}" for i in range(n)], "keyword": ["kw"] * n,
                         "text": [" ".join(rng.choice(w, 3)) for w in words], "target": y, "target2": 1 - y})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    rows(60).to_csv(d / "train.csv", index=False)
    rows(60).to_csv(d / "copy.csv", index=False)
    rows(20, 1).to_csv(d / "val.csv", index=False)
    rows(20, 2).to_csv(d / "test.csv", index=False)
    return d


def put(tree: dict, dotted: str, value) -> dict:
    tree = copy.deepcopy(tree)
    node = tree
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return tree


def get(tree, dotted: str):
    for p in dotted.split("."):
        tree = tree[p]
    return tree


def run(folder: Path, capsys, command: str, raw: dict, out: str):
    cfg = folder / f"{out}.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    capsys.readouterr()
    rc = main([command, str(cfg), "--output-dir", str(folder / out)])
    return rc, capsys.readouterr()


def same(recorded, value) -> bool:
    """Equal, a data file path resolved against the config's folder counting as its name."""
    if isinstance(value, str) and value.endswith(".csv") and isinstance(recorded, str):
        return Path(recorded).name == value
    return recorded == value


def records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("run.json"))]


def keys_of(cls) -> set[str]:
    return {k for k, _, _ in field_help(cls)} - SECTIONS


def test_the_table_covers_every_key():
    assert keys_of(ExperimentConfig) == set(TRAIN)
    compare_keys = keys_of(CompareConfig) - {"models"}
    assert compare_keys - {"model"} <= set(TRAIN) | set(COMPARE)
    assert {f"models.{k}" for k in ("name", "label", "model", "lora", "train", "full_finetune",
                                    "max_train_samples")} <= set(COMPARE)


def refused(rc, out, message) -> bool:
    lines = [x.replace("models[0].", "") for x in (out.out + out.err).splitlines() if x.startswith("lorabench: error")]
    return rc == 2 and len(lines) == 1 and message.replace("models[0].", "") in lines[0]


@pytest.mark.slow  # ~40 s: a TF-IDF run per key
@pytest.mark.parametrize("key", sorted(TRAIN))
def test_each_train_key_reaches_the_run_or_is_refused(folder, capsys, key):
    value, expected = TRAIN[key]
    raw = put(BASE, key, value)
    if key == "model.max_memory":
        raw = put(raw, "model.device_map", None)
    rc, out = run(folder, capsys, "train", raw, f"t-{key}")
    if isinstance(expected, str):
        assert refused(rc, out, expected), (rc, out)
        return
    assert rc == 0, out.err
    recs = records(folder / f"t-{key}")
    assert recs, "no run.json written"
    for rec in recs:  # k-fold: every fold's run
        assert same(get(rec["config"], key), value), (key, get(rec["config"], key))


# a comparison's own keys, and the same keys through a comparison: its shared sections and its entries
def _seeds(root):
    return sorted(r["seed"] for r in records(root)) == [11, 12] and \
        all(r["config"]["train"]["seed"] == r["seed"] for r in records(root))


def _statistics(root):
    return json.loads((root / "results.json").read_text())["statistics"]


COMPARE = {
    "name": ("other", None),
    "seeds": ([11, 12], _seeds),
    "refit": (True, lambda root: any(r.get("refit") for r in records(root))),
    "notes": ("a note", lambda root: "a note" in (root / "report.html").read_text()),
    "ensemble_top": (0, lambda root: not (root / "ensemble").exists()),
    "train.seed": (11, None),
    "statistics.alpha": (0.1, lambda root: _statistics(root)["alpha"] == 0.1),
    "statistics.bootstrap_resamples": (2000, lambda root: _statistics(root)["resamples"] == 2000),
    "statistics.bootstrap_seed": (5, lambda root: _statistics(root)["seed"] == 5),
    "model.name": ("tfidf-logreg", "model.name: in a comparison each entry names its model"),
    "models.name": ("tfidf-logreg", lambda root: records(root)[0]["config"]["model"]["name"] == "tfidf-logreg"),
    "models.label": ("Baseline", lambda root: [r["label"] for r in records(root)] == ["Baseline"]),
    "models.model": ({"max_length": 40}, lambda root: records(root)[0]["config"]["model"]["max_length"] == 40),
    "models.lora": ({"r": 2}, lambda root: records(root)[0]["config"]["lora"]["r"] == 2),
    "models.train": ({"epochs": 3}, lambda root: records(root)[0]["config"]["train"]["epochs"] == 3),
    "models.full_finetune": (True, lambda root: records(root)[0]["config"]["lora"] is None),
    "models.max_train_samples": (20, lambda root: records(root)[0]["config"]["data"]["max_train_samples"] == 20),
}
ENTRY_REFUSED = {  # entry settings that could not take effect
    "seed in an entry's train": ({"train": {"seed": 5}}, "models[0].train.seed: a comparison trains every model"),
    "name in an entry's model": ({"model": {"name": "tiny-bert"}}, "models[0].model.name: the entry's own `name`"),
    "lora with full_finetune": ({"full_finetune": True, "lora": {"r": 2}}, "models[0].lora: full_finetune: true"),
}


def compare_cases():
    for key in sorted(set(TRAIN) | set(COMPARE)):
        if key.startswith("model.") and key not in COMPARE:  # the shared model section is a dict of model keys
            yield key, TRAIN[key]
        elif key in COMPARE:
            yield key, COMPARE[key]
        elif key not in ("label",):  # `label` is an entry's (models.label)
            yield key, TRAIN[key]


@pytest.mark.slow  # ~45 s: a TF-IDF comparison per key
@pytest.mark.parametrize("key, case", list(compare_cases()), ids=[k for k, _ in compare_cases()])
def test_each_compare_key_reaches_every_run_or_is_refused(folder, capsys, key, case):
    value, expected = case
    if key.startswith("models."):
        raw = copy.deepcopy(COMPARE_BASE)
        raw["models"][0][key.split(".", 1)[1]] = value
    else:
        raw = put(COMPARE_BASE, key, value)
    if key == "model.max_memory":
        raw = put(raw, "model.device_map", None)
    if key == "data.fold":
        expected = "data.fold picks one fold of data.folds"
    rc, out = run(folder, capsys, "compare", raw, f"c-{key}")
    if isinstance(expected, str):
        assert refused(rc, out, expected), (rc, out)
        return
    assert rc == 0, out.err
    root = folder / f"c-{key}"
    if callable(expected):
        assert expected(root), [r["config"] for r in records(root)]
        return
    recs = [r for r in records(root) if not r.get("refit")]
    assert recs
    for rec in recs:
        assert same(get(rec["config"], key), value), (key, get(rec["config"], key))


@pytest.mark.parametrize("case", sorted(ENTRY_REFUSED))
def test_entry_settings_that_could_not_take_effect_are_refused(folder, capsys, case):
    entry, message = ENTRY_REFUSED[case]
    raw = copy.deepcopy(COMPARE_BASE)
    raw["models"][0].update(entry)
    rc, out = run(folder, capsys, "compare", raw, "refused")
    assert refused(rc, out, message), (rc, out)
    assert not (folder / "refused").exists()


def test_seeds_and_train_seed_that_disagree_are_refused_and_seeds_flag_starts_at_train_seed(folder, capsys):
    raw = put(put(COMPARE_BASE, "train.seed", 11), "seeds", [1, 2])
    rc, out = run(folder, capsys, "compare", raw, "disagree")
    assert refused(rc, out, "train.seed: 11 would not be used: a comparison trains every model with each of seeds"
                            " [1, 2]; put 11 in seeds"), out
    cfg = folder / "s.yaml"
    cfg.write_text(yaml.safe_dump(put(COMPARE_BASE, "train.seed", 11)))
    assert main(["compare", str(cfg), "--seeds", "2", "--output-dir", str(folder / "flag")]) == 0
    assert sorted(r["seed"] for r in records(folder / "flag")) == [11, 12]


def test_model_kind_defaults_from_the_name():
    assert ModelConfig(name="tfidf-logreg").kind == "tfidf-logreg" and ModelConfig().kind == "transformer"


@pytest.mark.parametrize("data, message", [
    ({"val": "val.csv", "train_size": 0.7}, "data.train_size splits data.source into train and val; data.val is given"),
    ({"folds": 3, "train_size": 0.7}, "data.train_size splits data.source into train and val; data.folds puts every"),
    ({"val": "val.csv", "split_seed": 7}, "data.split_seed seeds the train/val split of data.source (and its folds); "
                                          "data.val is given"),
])
def test_split_settings_another_key_makes_unused_are_refused(folder, capsys, data, message):
    raw = copy.deepcopy(BASE)
    raw["data"].update(data)
    rc, out = run(folder, capsys, "train", raw, "unused")
    assert refused(rc, out, message), (rc, out)
