import hashlib
import json
import re
from pathlib import Path

import pytest

from lorabench.config import CompareConfig, ExperimentConfig, apply_overrides, from_dict, load_config
from lorabench.errors import ConfigError


def test_defaults_are_the_studys_but_faster():
    t = ExperimentConfig().train
    assert (t.epochs, t.max_grad_norm, t.weight_decay, t.warmup_ratio) == (5, 0.3, 0.001, 0.1)
    assert t.learning_rate == pytest.approx(1e-4 * 32 / 8)  # the study's rate per sample, at batch 32
    # batch 32 where an epoch still makes enough optimiser steps, else smaller (tests/test_batch.py)
    assert t.batch_size == "auto" and t.min_steps_per_epoch == 250
    assert t.lr_scheduler == "constant_with_warmup" and not t.gradient_checkpointing and t.group_by_length == "auto"
    assert t.fast_dropout and t.pooled_only_last_layer and not t.torch_compile


def test_overrides_parse_yaml_values(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: {name: tiny-bert}\ntrain: {epochs: 2}\n")
    cfg = load_config(ExperimentConfig, p, ["train.learning_rate=2e-4", "lora=null", "lora.r=4",
                                            "data.source=data.csv"])
    assert cfg.train.learning_rate == 2e-4 and cfg.train.epochs == 2 and cfg.lora.r == 4
    assert Path(cfg.data.source) == tmp_path / "data.csv"  # relative to the config file
    assert load_config(ExperimentConfig, p, ["lora=null"]).lora is None


@pytest.mark.parametrize("raw,match", [
    ({"trian": {}}, "unknown key 'trian'"),
    ({"train": {"epoch": 1}}, "unknown key 'train.epoch'"),
    ({"train": {"batch_size": "big"}}, "train.batch_size: expected one of an integer, 'auto'"),
    ({"train": {"batch_size": 0}}, "train.batch_size must be >= 1"),
    ({"model": {"dtype": "float8"}}, "model.dtype: expected one of"),
    ({"lora": {"dropout": 1.5}}, "lora.dropout"),
    ({"data": {"class_weights": "weird"}}, "data.class_weights"),
])
def test_invalid_config_names_the_key(raw, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(ExperimentConfig, raw)


def test_set_requires_key_value():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["train.epochs"])


def test_compare_entries_inherit_and_override():
    cfg = from_dict(CompareConfig, {"lora": {"r": 4}, "train": {"epochs": 2},
                                    "models": [{"name": "tiny-bert", "lora": {"r": 2}},
                                               {"name": "tiny-llama", "train": {"epochs": 1}, "label": "L"},
                                               {"name": "tiny-roberta", "full_finetune": True}],
                                    "seeds": [1, 2]})
    exps = cfg.experiments()
    assert len(exps) == 6
    assert exps[0].lora.r == 2 and exps[0].train.epochs == 2 and exps[0].train.seed == 1
    assert exps[2].label == "L" and exps[2].train.epochs == 1 and exps[2].lora.r == 4
    assert exps[4].lora is None


def test_every_shipped_example_parses():
    from lorabench.config import read_yaml
    root = Path(__file__).resolve().parents[1] / "examples"
    files = sorted(root.rglob("*.yaml"))
    assert files
    for f in files:
        raw = read_yaml(f)
        if "sweep" in raw:
            from lorabench.recipes.sweep import load_sweep_config
            load_sweep_config(f, [])
        elif "models" in raw:
            load_config(CompareConfig, f)
        else:
            load_config(ExperimentConfig, f)
        assert f.read_text().startswith("# lorabench "), f"{f.name} must start with the command that runs it"


def test_home_and_config_relative_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "val").mkdir()
    p = tmp_path / "sub" / "c.yaml"
    p.write_text("data: {source: ~/train.csv, val: val, test: org/dataset}\n")
    cfg = load_config(ExperimentConfig, p)
    assert cfg.data.source == str(tmp_path / "train.csv")
    assert cfg.data.val == str(tmp_path / "sub" / "val")   # an existing folder beside the config
    assert cfg.data.test == "org/dataset"                   # a hub id stays as it is


# --------------------------------------------------------------------------- pydantic validation (issue 15)
# What the hand-written loader produced, byte for byte: run.json stores `to_dict(cfg)`, config.yaml
# `dump_yaml(cfg)`, and compare's reuse check compares them (another dict would re-train everything).
# sha256 of json.dumps(to_dict(cfg)) + dump_yaml(cfg), captured with the loader before pydantic; updated on purpose
# when keys are added (issue 16: train.batch_size auto, train.min_steps_per_epoch, ensemble_top, data.folds,
# data.fold, refit; issue 21: model.trust_hub_kernels; issue 22: seeds null = [train.seed], so a comparison's
# dump changes, not a run's; issue 23: study.yaml trains with `constant`, as the study did: no warmup; issue 25:
# data.task, data.label_separator, train.regression_loss, train.metric_for_best_model null = the task's metric).
SNAPSHOTS = {
    "defaults": "6d50a764a7841e5c228d0a498b520631df71d282045718005edff8433f482fc8",
    "empty dict": "6d50a764a7841e5c228d0a498b520631df71d282045718005edff8433f482fc8",
    "yaml with every lossless conversion": "a48c004444205be8b6ee4f73d2db3af2afc0f189110832932fa69fe8f453e1f6",
    "set overrides": "d27bcbb7ce94e9357303a83f942f3a10e867e33cd0e3f762e75a99a32261f6af",
    "compare": "6ce4414e1b0e106b6f67aa66529b41f06bd54718278041126736523de313671b",
    "compare experiments": "7bdff596c2099454665e1b6700802a63f6a0ec29077b1e4628a9fd88752833f0",
    "sweep base": "548365eee93894f8c46a979b81bfb3aef7595a90d99297ea75361c6dcdd2960f",
    "quickstart.yaml": "3256137906bb9bf18b07f72f4b87262fae5ae5d948becc3359e3ba5de8e3f220",
    "study.yaml": "e1bd7bf3caad3a805254bb8a0cd1ce3c10e0eb45b3ecf178d9be4b660baa94f8",
    "built in Python": "b72daa149114e929ad4f2ce0ece0b178ccef1856dc86380c80be7aee6dda3ecb",
    "dataclasses.replace": "2d56a0cb3c16b3f03269f6939b4cc59e203b81336db184d0d8eab97df8023fef",
}
# the same for `lorabench keys train|compare|sweep` (help text and defaults; updated on purpose with train.report_to's help,
# and for issue 16's keys; issue 21: model.trust_hub_kernels; issue 22: seeds, model.kind defaults; issue 23: lr_scheduler, warmup_ratio;
# issue 24: train.calibration, train.serving_cost, statistics.*; issue 25: data.long_text, data.stride, data.task,
# data.label, data.label_separator, data.class_weights, train.metric_for_best_model, train.threshold,
# train.regression_loss, sweep.metric)
KEYS_SNAPSHOT = "04a56e5d3206d8e03bab21aeac2404aaf903e16ecb68ec20e0442bfd4430df7b"

TRICKY_YAML = """
name: 7
data: {source: d.csv, label: 3, label_names: [0, 1], class_weights: [1, 2.5], positive_label: 1,
       max_train_samples: 100.0, delimiter: ';', encoding: latin-1, train_size: 0.75}
model: {name: tiny-llama, max_length: 64.0, device_map: auto, max_memory: {0: 20GiB, cpu: 60GiB}, dtype: bfloat16}
lora: {r: 4.0, alpha: 8, dropout: 0, target_modules: [q_proj, v_proj]}
train: {learning_rate: 1e-4, epochs: 2, warmup_ratio: 0, max_grad_norm: 1, batch_size: 16.0, threshold: tune,
        report_to: [none], lr_scheduler: cosine, max_steps: 10, seed: 3.0}
"""
COMPARE = {"name": "c", "model": {"max_length": 64}, "lora": {"r": 4}, "train": {"epochs": 2, "learning_rate": "1e-4"},
           "models": [{"name": "tiny-bert", "lora": {"r": 2}, "max_train_samples": 10},
                      {"name": "tiny-llama", "train": {"epochs": 1}, "label": "L", "model": {"dtype": "float32"}},
                      {"name": "tiny-roberta", "full_finetune": True}, {"name": "tfidf-logreg"}],
           "seeds": [1, 2.0], "notes": 5}


def _representative(tmp: Path) -> dict:
    import dataclasses

    from lorabench.config import DataConfig, LoraConfig, ModelConfig, TrainConfig, dump_yaml, to_dict
    from lorabench.recipes.sweep import load_sweep_config
    examples = Path(__file__).resolve().parents[1] / "examples"
    (tmp / "tricky.yaml").write_text(TRICKY_YAML)
    built = ExperimentConfig(name="t", data=DataConfig(max_train_samples=160, max_eval_samples=80),
                             model=ModelConfig(name="tiny-bert", max_length=48), lora=LoraConfig(r=4),
                             train=TrainConfig(epochs=1.0, batch_size=16, learning_rate=1e-3, threshold="tune"))
    compare = from_dict(CompareConfig, COMPARE)
    configs = {
        "defaults": ExperimentConfig(),
        "empty dict": from_dict(ExperimentConfig, {"data": None, "train": {}}),
        "yaml with every lossless conversion": load_config(ExperimentConfig, tmp / "tricky.yaml"),
        "set overrides": load_config(ExperimentConfig, tmp / "tricky.yaml", [
            "lora=null", "train.learning_rate=2e-4", "data.class_weights=none", "data.delimiter=|", "model.device_map=null",
            "model.max_memory=null", "train.threshold=0.3", "train.report_to=none", "data.positive_label=2"]),
        "compare": compare,
        "compare experiments": compare.experiments(),
        "sweep base": load_sweep_config(examples / "sweep-study.yaml", []).base(),
        "quickstart.yaml": load_config(CompareConfig, examples / "quickstart.yaml"),
        "study.yaml": load_config(CompareConfig, examples / "study.yaml"),
        "built in Python": built,
        "dataclasses.replace": dataclasses.replace(built, label="x", train=dataclasses.replace(built.train, seed=1)),
    }
    out = {}
    for name, cfg in configs.items():
        cfgs = cfg if isinstance(cfg, list) else [cfg]
        text = "".join(json.dumps(to_dict(c)) + dump_yaml(c) for c in cfgs)
        out[name] = hashlib.sha256(text.replace(str(tmp), "<tmp>").replace(str(examples), "<examples>").encode()).hexdigest()
    return out


def _keys_output() -> str:
    import contextlib
    import io

    from lorabench.cli import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        for kind in ("train", "compare", "sweep"):
            assert main(["keys", kind]) == 0
    return hashlib.sha256(buf.getvalue().encode()).hexdigest()


def test_to_dict_and_yaml_are_byte_identical_to_the_hand_written_loaders(tmp_path):
    assert _representative(tmp_path) == SNAPSHOTS


def test_keys_output_is_unchanged():
    assert _keys_output() == KEYS_SNAPSHOT


def test_lossless_conversions_of_yaml_values(tmp_path):
    (tmp_path / "c.yaml").write_text(TRICKY_YAML)
    cfg = load_config(ExperimentConfig, tmp_path / "c.yaml", ["train.max_grad_norm=2"])
    d, m, lo, t = cfg.data, cfg.model, cfg.lora, cfg.train
    assert t.learning_rate == 1e-4 and type(t.learning_rate) is float   # YAML reads 1e-4 as a string
    assert (t.epochs, t.warmup_ratio, t.max_grad_norm, lo.dropout) == (2.0, 0.0, 2.0, 0.0)
    assert all(type(v) is float for v in (t.epochs, t.warmup_ratio, t.max_grad_norm, lo.dropout))
    assert (t.batch_size, t.seed, m.max_length, lo.r, d.max_train_samples) == (16, 3, 64, 4, 100)
    assert all(type(v) is int for v in (t.batch_size, t.seed, m.max_length, lo.r, d.max_train_samples))
    assert (cfg.name, d.label, d.label_names, d.positive_label) == ("7", "3", ["0", "1"], "1")  # numbers -> str
    assert d.class_weights == [1.0, 2.5] and t.threshold == "tune" and t.report_to == ["none"]
    assert m.device_map == "auto" and m.max_memory == {0: "20GiB", "cpu": "60GiB"}
    assert from_dict(ExperimentConfig, {"train": {"threshold": "0.3"}}).train.threshold == 0.3
    assert from_dict(ExperimentConfig, {"model": {"device_map": {"": 0}}}).model.device_map == {"": 0}
    assert from_dict(ExperimentConfig, {"model": {"name": "tfidf-logreg"}}).model.kind == "tfidf-logreg"
    assert from_dict(ExperimentConfig, {"lora": None}).lora is None
    assert from_dict(ExperimentConfig, {"data": None, "train": None}) == ExperimentConfig()  # `train:` left empty


@pytest.mark.parametrize("raw,message", [
    # types: no bool for a number, no "3" for a count, no 1 for true (as before)
    ({"train": {"epochs": "five"}}, "train.epochs: expected a number, got 'five'"),
    ({"train": {"epochs": True}}, "train.epochs: expected a number, got True"),
    ({"train": {"batch_size": "8"}}, "train.batch_size: expected one of an integer, 'auto', got '8'"),
    ({"train": {"batch_size": 2.5}}, "train.batch_size: expected one of an integer, 'auto', got 2.5"),
    ({"train": {"torch_compile": 1}}, "train.torch_compile: expected true or false, got 1"),
    ({"name": None}, "name: expected a string, got None"),
    ({"model": {"device_map": "fast"}},
     "model.device_map: expected one of 'auto', 'balanced', 'balanced_low_0', 'sequential', a mapping, null, got 'fast'"),
    ({"data": {"class_weights": [1, "x"]}}, "data.class_weights: expected one of 'balanced', 'none', a list, got [1, 'x']"),
    ({"data": {"positive_label": True}}, "data.positive_label: expected one of a string, an integer, null, got True"),
    ({"train": {"threshold": "high"}}, "train.threshold: expected one of a number, 'tune', got 'high'"),
    ({"data": {"label_names": ["a", True]}}, "data.label_names[1]: expected a string, got True"),
    ({"lora": {"bias": "some"}}, "lora.bias: expected one of 'none', 'all', 'lora_only', got 'some'"),
    ({"lora": {"target_modules": "q_proj"}}, "lora.target_modules: expected a list, got 'q_proj'"),
    ({"model": {"max_memory": [1]}}, "model.max_memory: expected a mapping, got [1]"),
    ({"train": "fast"}, "train: expected a mapping, got 'fast'"),
    # unknown keys first, then the keys in the order written, a section's own checks after its values
    ({"train": {"epochs": "x"}, "trian": 1}, "unknown key 'trian' (allowed: name, data, model, lora, train, label)"),
    ({"train": {"batch_size": 0, "epochs": "x"}}, "train.epochs: expected a number, got 'x'"),
    ({"train": {"batch_size": 0}, "model": {"dtype": "x"}}, "train.batch_size must be >= 1, got 0"),
    ({"model": {"dtype": "x"}, "train": {"batch_size": 0}}, "model.dtype: expected one of"),
    ({"train": {"learning_rate": -1, "batch_size": 0}}, "train.batch_size must be >= 1, got 0"),
    # the checks across values, as they read before
    ({"train": {"learning_rate": -1}}, "train.learning_rate must be > 0, got -1.0"),
    ({"train": {"max_steps": 0}}, "train.max_steps must be >= 1 (or null for epochs), got 0"),
    ({"train": {"threshold": 1}}, "train.threshold must be in (0, 1) or 'tune', got 1.0"),
    ({"train": {"lr_scheduler": "wobbly"}}, "train.lr_scheduler: unknown scheduler 'wobbly' (one of linear,"),
    ({"train": {"report_to": ["none", 0.5]}}, "train.report_to: unknown tracker '0.5'"),
    ({"data": {"encoding": "klingon"}}, "data.encoding: unknown encoding 'klingon' (e.g. utf-8, latin-1, cp1252)"),
    ({"data": {"delimiter": ";;"}}, "data.delimiter must be one character, got ';;'"),
    ({"data": {"train_size": 1}}, "data.train_size must be in (0, 1), got 1.0"),
    ({"data": {"class_weights": [1, 0]}}, "data.class_weights must be positive, got [1.0, 0.0]"),
    ({"model": {"max_memory": {0: "20GiB"}}},
     "model.max_memory applies with model.device_map only; set model.device_map: auto"),
    ({"model": {"device_map": "auto", "max_memory": {"gpu0": "1GB"}}},
     "model.max_memory: device 'gpu0' is not a GPU index, cpu or disk"),
    ({"model": {"device_map": "auto", "max_memory": {0: "lots"}}},
     "model.max_memory[0]: 'lots' is not an amount such as 20GiB or 24GB"),
    ({"lora": None, "model": {"quantization": "4bit"}}, "model.quantization: 4bit freezes the quantized weights"),
])
def test_errors_are_one_line_naming_the_key_path(raw, message):
    with pytest.raises(ConfigError) as e:
        from_dict(ExperimentConfig, raw)
    assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("raw,message", [
    ({}, "models: a comparison needs at least one entry"),
    ({"models": [{"label": "a"}]}, "missing key 'models[0].name'"),
    ({"models": [{"name": "a", "epochs": 1}]}, "unknown key 'models[0].epochs' (allowed: name, label, model, lora, "),
    ({"models": ["a"]}, "models[0]: expected a mapping, got 'a'"),
    ({"models": [{"name": "a"}, {"name": "b", "label": "a"}]}, "models: duplicate label 'a'"),
    ({"models": [{"name": "a"}], "seeds": []}, "seeds: give at least one seed"),
    ({"models": [{"name": "a"}], "seeds": [1, "x"]}, "seeds[1]: expected an integer, got 'x'"),
])
def test_compare_errors_name_the_entry(raw, message):
    with pytest.raises(ConfigError) as e:
        from_dict(CompareConfig, raw)
    assert str(e.value).startswith(message), str(e.value)


def test_an_entrys_own_overrides_are_checked_under_its_index():
    for entry, message in [({"train": {"batch_size": 0}}, "models[0].train.batch_size must be >= 1, got 0"),
                           ({"lora": {"rr": 1}}, "unknown key 'models[0].lora.rr'"),
                           ({"model": {"dtype": "x"}}, "models[0].model.dtype: expected one of"),
                           ({"model": {"quantization": "8bit"}, "full_finetune": True},
                            "models[0].model.quantization: 8bit freezes")]:
        cfg = from_dict(CompareConfig, {"models": [{"name": "tiny-bert", "label": "A", **entry}]})
        with pytest.raises(ConfigError) as e:
            cfg.experiments()
        assert str(e.value).startswith(message), str(e.value)


def test_configs_built_in_python_are_frozen_validated_dataclasses():
    import dataclasses

    from lorabench.config import DataConfig, LoraConfig, ModelEntry, SweepConfig, TrainConfig
    cfg = ExperimentConfig(train=TrainConfig(batch_size=8))
    assert dataclasses.is_dataclass(cfg) and cfg == from_dict(ExperimentConfig, {"train": {"batch_size": 8}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "x"
    assert dataclasses.replace(cfg, label="x").label == "x" and cfg.label is None
    for build, message in [(lambda: TrainConfig(batch_size=0), "train.batch_size must be >= 1, got 0"),
                           (lambda: dataclasses.replace(LoraConfig(), r=0), "lora.r must be >= 1, got 0"),
                           (lambda: DataConfig(encoding="klingon"), "data.encoding: unknown encoding"),
                           (lambda: TrainConfig(epoch=1), "unknown key 'train.epoch'"),
                           (lambda: ModelEntry(), "missing key 'name'"),
                           (lambda: SweepConfig(), "missing key 'sweep'"),
                           (lambda: dataclasses.replace(cfg, lora=None, model=dataclasses.replace(
                               cfg.model, quantization="4bit")), "model.quantization: 4bit freezes")]:
        with pytest.raises(ConfigError) as e:
            build()
        assert str(e.value).startswith(message), str(e.value)


def test_a_misspelled_tracker_is_unknown_not_uninstalled():
    from lorabench.config import TrainConfig
    from lorabench.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown tracker 'tensorbord'.*wandb, mlflow, tensorboard, trackio"):
        TrainConfig(report_to=["tensorbord"])


def test_scheduler_names_are_transformers_own():
    """The names a config accepts are checked without importing transformers; each must still be one of its."""
    from transformers import SchedulerType

    from lorabench.config.schema import LR_SCHEDULERS
    assert set(LR_SCHEDULERS) <= {t.value for t in SchedulerType}


# --------------------------------------------------------------------------- issue 22: a key written twice
@pytest.mark.parametrize("text, named", [
    ("name: a\ntrain:\n  epochs: 1\n  batch_size: 8\n  epochs: 3\n", "key 'train.epochs' is written twice (lines 3 and 5)"),
    ("name: a\nname: b\n", "key 'name' is written twice (lines 1 and 2)"),
    ("train: {epochs: 1, epochs: 3}\n", "key 'train.epochs' is written twice (lines 1 and 1)"),
    ("models:\n  - name: tiny-bert\n  - name: tiny-llama\n    label: x\n    name: tiny-bert\n",
     "key 'models[1].name' is written twice (lines 3 and 5)"),
    ("sweep:\n  parameters:\n    lora_r: {values: [2]}\n    lora_r: {values: [4]}\n",
     "key 'sweep.parameters.lora_r' is written twice (lines 3 and 4)"),
])
def test_a_key_written_twice_is_refused_naming_it_and_both_lines(tmp_path, text, named):
    from lorabench.config.loading import read_yaml
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"{p}: {named}; keep one")):
        read_yaml(p)


def test_duplicates_are_refused_in_every_yaml_lorabench_reads(tmp_path, capsys):
    """--set values, and files lorabench wrote that a user may edit (a comparison's compare.yaml)."""
    from lorabench.cli import main
    (tmp_path / "c.yaml").write_text("name: c\nmodels: [{name: tfidf-logreg}]\n")
    assert main(["train", str(tmp_path / "c.yaml"), "--set", "train={epochs: 1, epochs: 2}"]) == 2
    assert "--set train: key 'epochs' is written twice" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "c.yaml"), "--output-dir", str(tmp_path / "out")]) == 0
    (tmp_path / "out" / "compare.yaml").write_text("name: c\nname: d\nmodels: [{name: tfidf-logreg}]\n")
    capsys.readouterr()
    assert main(["report", str(tmp_path / "out")]) == 2
    assert "compare.yaml: key 'name' is written twice (lines 1 and 2)" in capsys.readouterr().err


def test_yaml_merge_keys_may_still_override():
    from lorabench.config.loading import load_yaml
    assert load_yaml("base: &b {epochs: 1, seed: 3}\ntrain:\n  <<: *b\n  epochs: 2\n", "x")["train"] == {
        "epochs": 2, "seed": 3}


def test_a_warmup_the_schedule_would_not_use_is_refused_and_the_default_follows_the_schedule():
    """transformers' `constant` schedule has no warmup: the study's code asked for constant with warmup_ratio 0.1 and
    trained without one (issue 23). A warmup ratio with such a schedule is refused; the default is 0 there."""
    from lorabench.config import TrainConfig
    assert TrainConfig().warmup_ratio == 0.1 and TrainConfig(lr_scheduler="constant").warmup_ratio == 0.0
    assert TrainConfig(lr_scheduler="linear").warmup_ratio == 0.1
    with pytest.raises(ConfigError, match=r"train.warmup_ratio: transformers' 'constant' schedule has no warmup"):
        TrainConfig(lr_scheduler="constant", warmup_ratio=0.1)
    study = load_config(CompareConfig, Path(__file__).resolve().parents[1] / "examples" / "study.yaml")
    assert (study.train.lr_scheduler, study.train.warmup_ratio) == ("constant", 0.0)
