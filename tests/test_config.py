from pathlib import Path

import pytest

from lorabench.config import CompareConfig, ExperimentConfig, apply_overrides, from_dict, load_config
from lorabench.errors import ConfigError


def test_defaults_are_the_studys_but_faster():
    t = ExperimentConfig().train
    assert (t.epochs, t.max_grad_norm, t.weight_decay, t.warmup_ratio) == (5, 0.3, 0.001, 0.1)
    assert t.batch_size == 32 and t.learning_rate == pytest.approx(1e-4 * 32 / 8)  # the study's rate per sample
    assert t.lr_scheduler == "constant_with_warmup" and not t.gradient_checkpointing and t.group_by_length
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
    ({"train": {"batch_size": "big"}}, "train.batch_size: expected an integer"),
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
