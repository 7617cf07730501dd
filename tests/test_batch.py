"""train.batch_size auto: enough optimiser steps per epoch on small data, batch 32 on large (issue 16, item 6)."""
import json

import pytest

from lorabench.config import TrainConfig
from lorabench.errors import ConfigError
from lorabench.training.batch import resolve_batch


@pytest.mark.parametrize("rows, batch, steps", [
    (160, 8, 20),       # too small for 250 steps even at 8: the study's batch, not lower
    (500, 8, 63),       # the study's batch and steps
    (1500, 8, 188),
    (3000, 12, 250),    # the largest batch that still makes 250 steps
    (6090, 24, 254),
    (8000, 32, 250),    # large data: batch 32, as before
    (20000, 32, 625),
])
def test_auto_batch_keeps_min_steps_and_the_rate_per_sample(rows, batch, steps):
    cfg, rec = resolve_batch(TrainConfig(), rows)
    assert (cfg.batch_size, rec["steps_per_epoch"]) == (batch, steps)
    assert cfg.learning_rate == pytest.approx(4e-4 * batch / 32)  # the study's 1e-4 at 8, per sample
    assert rec["learning_rate"] == cfg.learning_rate and rec["batch_size"] == batch
    assert cfg.eval_batch_size == 32  # evaluation makes no optimiser steps
    assert cfg.group_by_length is (batch >= 16) and rec["group_by_length"] is (batch >= 16)  # buckets from 16 up


def test_auto_batch_counts_processes_and_accumulation():
    # 2 processes x accumulation 2: one optimiser step takes 4 micro-batches
    cfg, rec = resolve_batch(TrainConfig(gradient_accumulation_steps=2), 6000, world_size=2)
    assert cfg.batch_size == 8 and rec["steps_per_epoch"] == 188
    assert cfg.learning_rate == pytest.approx(4e-4)  # the rate of a global batch of 32: 8 x 2 x 2
    cfg, _ = resolve_batch(TrainConfig(gradient_accumulation_steps=4), 3000)
    assert cfg.batch_size == 8 and cfg.learning_rate == pytest.approx(4e-4)  # global 32, not 4e-4 x 8/32


def test_length_buckets_auto_and_explicit():
    assert resolve_batch(TrainConfig(batch_size=8), 500)[0].group_by_length is False
    assert resolve_batch(TrainConfig(batch_size=16), 500)[0].group_by_length is True
    assert resolve_batch(TrainConfig(batch_size=8, group_by_length=True), 500)[0].group_by_length is True
    assert resolve_batch(TrainConfig(group_by_length=False), 20000)[0].group_by_length is False
    # a bucket holds one optimiser step's rows: 2 processes x 8 group by length as 1 x 16 does
    assert resolve_batch(TrainConfig(batch_size=8), 500, world_size=2)[0].group_by_length is True


def test_an_integer_batch_is_used_as_given():
    given = TrainConfig(batch_size=32, learning_rate=1e-3, min_steps_per_epoch=10_000, group_by_length=True)
    cfg, rec = resolve_batch(given, 500)
    assert cfg == given and rec["rule"] == "as configured" and rec["steps_per_epoch"] == 16


def test_min_steps_is_checked():
    with pytest.raises(ConfigError, match="train.min_steps_per_epoch must be >= 1"):
        TrainConfig(min_steps_per_epoch=0)
    with pytest.raises(ConfigError, match="train.batch_size"):
        TrainConfig(batch_size="big")


def test_a_run_trains_with_the_auto_batch_and_records_it(tmp_path, tiny_config):
    """End to end: 160 train rows -> batch 8, 20 steps per epoch, learning rate scaled; recorded in run.json."""
    from lorabench.cli import main
    cfg = tiny_config("tiny-bert", extra="")
    text = cfg.read_text().replace("batch_size: 16, learning_rate: 1.0e-3, ", "")
    cfg.write_text(text)
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "run")]) == 0
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert rec["config"]["train"]["batch_size"] == "auto"
    assert rec["batch"]["batch_size"] == 8 and rec["batch"]["steps_per_epoch"] == 20
    assert rec["batch"]["learning_rate"] == pytest.approx(4e-4 * 8 / 32)
    assert rec["parallel"]["per_device_batch_size"] == 8 and rec["steps"] == 20
    assert rec["batch"]["group_by_length"] is False  # batch 8: random batches


def test_a_refit_keeps_the_batch_and_learning_rate_its_run_trained_with(tmp_path, tiny_config):
    """batch_size auto picks by the train rows; a refit trains on more rows (train + val) but must keep the batch
    and learning rate the chosen run used, not pick anew (160 rows -> 17 here, 240 rows would give 26)."""
    from lorabench.cli import main
    cfg = tiny_config("tiny-bert", extra="")
    cfg.write_text(cfg.read_text().replace("batch_size: 16, learning_rate: 1.0e-3, ",
                                           "min_steps_per_epoch: 10, "))
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "run"), "--refit"]) == 0
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    refit = json.loads((tmp_path / "run-refit" / "run.json").read_text())
    assert rec["batch"]["batch_size"] == 17 and rec["batch"]["learning_rate"] == pytest.approx(4e-4 * 17 / 32)
    assert refit["data"]["train_rows"] == 240
    assert resolve_batch(TrainConfig(min_steps_per_epoch=10), 240)[0].batch_size == 26  # what auto would pick
    assert refit["batch"]["batch_size"] == 17 and refit["batch"]["learning_rate"] == rec["batch"]["learning_rate"]
    assert refit["steps"] == 15  # 240 rows at 17 a step, one epoch
    assert refit["refit"]["batch"]["batch_size"] == 17 and "kept from run" in refit["refit"]["batch"]["rule"]
