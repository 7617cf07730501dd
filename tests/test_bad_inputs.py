"""Every bad input a clean error: exit 2, one line naming the problem, no traceback, nothing written.

Each case runs `lorabench ...` in-process (the same `main` the console script calls) in a fresh working
folder; what the folder held before is compared with what it holds after.
"""
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from lorabench.cli import main

GOOD = "name: g\ndata: {source: train.csv, val: val.csv}\nmodel: {name: tiny-bert, max_length: 32}\n" \
       "train: {epochs: 1, batch_size: 16}\n"
SWEEP = GOOD + "sweep:\n  method: random\n  run_cap: 1\n  parameters:\n"


def _rows(n, labels=(0, 1)):
    words = ["fire burning smoke", "happy summer music", "blaze flames now", "good fun day"]
    return pd.DataFrame({"id": [f"{i:03d}" for i in range(n)], "text": [words[i % 4] + f" {i}" for i in range(n)],
                         "target": [labels[i % 4 in (0, 2)] for i in range(n)]})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("trained")
    _rows(64).to_csv(d / "train.csv", index=False)
    _rows(16).to_csv(d / "val.csv", index=False)
    (d / "c.yaml").write_text(GOOD)
    assert main(["train", str(d / "c.yaml"), "--output-dir", str(d / "run")]) == 0
    return d / "run"


def files(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


# (argv with {run} = a trained run folder, {files}, expected text in the error line)
# files: name -> text written into the working folder before the call ("train.csv"/"val.csv" are good data)
CASES = {
    "config missing": (["train", "nope.yaml"], {}, "config file not found"),
    "config not YAML": (["train", "c.yaml"], {"c.yaml": "data: [unclosed"}, "not valid YAML"),
    "config a list": (["train", "c.yaml"], {"c.yaml": "- a\n- b\n"}, "top level must be a mapping"),
    "unknown key": (["train", "c.yaml"], {"c.yaml": GOOD + "trian: {}\n"}, "unknown key 'trian'"),
    "unknown nested key": (["train", "c.yaml", "--set", "train.epoch=3"], {"c.yaml": GOOD}, "train.epoch"),
    "wrong type": (["train", "c.yaml", "--set", "train.epochs=five"], {"c.yaml": GOOD}, "train.epochs"),
    "bad value": (["train", "c.yaml", "--set", "train.learning_rate=-1"], {"c.yaml": GOOD}, "train.learning_rate"),
    "lora rank 0": (["train", "c.yaml", "--set", "lora.r=0"], {"c.yaml": GOOD}, "lora.r"),
    "threshold out of range": (["train", "c.yaml", "--set", "train.threshold=1.5"], {"c.yaml": GOOD}, "train.threshold"),
    "unknown scheduler": (["train", "c.yaml", "--set", "train.lr_scheduler=wobbly"], {"c.yaml": GOOD}, "wobbly"),
    "unsupported tracker": (["train", "c.yaml", "--set", "train.report_to=[neptune]"], {"c.yaml": GOOD},
                            "unknown tracker 'neptune' (lorabench's: wandb, mlflow, tensorboard, trackio"),
    "--set without =": (["train", "c.yaml", "--set", "train.epochs"], {"c.yaml": GOOD}, "expected key=value"),
    "data file missing": (["train", "c.yaml", "--set", "data.source=gone.csv"], {"c.yaml": GOOD}, "gone.csv"),
    "empty file": (["train", "c.yaml", "--set", "data.source=empty.csv"], {"c.yaml": GOOD, "empty.csv": ""}, "empty.csv"),
    "header only": (["train", "c.yaml", "--set", "data.source=h.csv"], {"c.yaml": GOOD, "h.csv": "text,target\n"}, "no rows"),
    "folder as data": (["train", "c.yaml", "--set", "data.source=dir.csv"], {"c.yaml": GOOD, "dir.csv/x": "1"}, "dir.csv"),
    "unsupported type": (["train", "c.yaml", "--set", "data.source=t.xlsx"], {"c.yaml": GOOD, "t.xlsx": "x"}, "unsupported file type"),
    "malformed JSON": (["train", "c.yaml", "--set", "data.source=t.jsonl"], {"c.yaml": GOOD, "t.jsonl": '{"text": "a",\n'}, "not valid JSON"),
    "missing text column": (["train", "c.yaml", "--set", "data.text=tweet"], {"c.yaml": GOOD}, "no column 'tweet'"),
    "missing template field": (["train", "c.yaml", "--set", "data.text={kw} {text}"], {"c.yaml": GOOD}, "no column 'kw'"),
    "missing label column": (["train", "c.yaml", "--set", "data.label=y"], {"c.yaml": GOOD}, "no label column 'y'"),
    "one class": (["train", "c.yaml", "--set", "data.source=one.csv"], {"c.yaml": GOOD, "one.csv": "text,target\na,1\nb,1\n"}, "single class"),
    "empty labels": (["train", "c.yaml", "--set", "data.source=e.csv"], {"c.yaml": GOOD, "e.csv": "text,target\na,1\nb,\nc,0\n"}, "empty value"),
    "val label unseen": (["train", "c.yaml", "--set", "data.val=v.csv"], {"c.yaml": GOOD, "v.csv": "text,target\na,7\n"}, "not among the train labels"),
    "empty val": (["train", "c.yaml", "--set", "data.val=v.csv"], {"c.yaml": GOOD, "v.csv": "text,target\n"}, "validation split is empty"),
    "unknown encoding": (["train", "c.yaml", "--set", "data.encoding=klingon"], {"c.yaml": GOOD}, "data.encoding"),
    "wrong encoding": (["train", "c.yaml", "--set", "data.source=l.csv"], {"c.yaml": GOOD, "l.csv": b"text,target\ncaf\xe9,1\nx,0\n"}, "data.encoding"),
    "positive label unknown": (["train", "c.yaml", "--set", "data.positive_label=maybe"], {"c.yaml": GOOD}, "data.positive_label"),
    "class weights length": (["train", "c.yaml", "--set", "data.class_weights=[1, 2, 3]"], {"c.yaml": GOOD}, "class_weights has 3 values"),
    "label names length": (["train", "c.yaml", "--set", "data.label_names=[a]"], {"c.yaml": GOOD}, "label_names has 1"),
    "unknown model": (["train", "c.yaml", "--set", "model.name=tiny-gpt9"], {"c.yaml": GOOD}, "unknown model name 'tiny-gpt9'"),
    "hub model offline": (["train", "c.yaml", "--set", "model.name=someone/model"], {"c.yaml": GOOD}, "offline"),
    "model folder without config": (["train", "c.yaml", "--set", "model.name=./m"], {"c.yaml": GOOD, "m/x.txt": "x"}, "config.json"),
    "missing lora target": (["train", "c.yaml", "--set", "lora.target_modules=[nope]"], {"c.yaml": GOOD}, "'nope'"),
    "max_length too long": (["train", "c.yaml", "--set", "model.max_length=4096"], {"c.yaml": GOOD}, "model.max_length 4096"),
    "output folder not empty": (["train", "c.yaml", "--output-dir", "out"], {"c.yaml": GOOD, "out/keep.txt": "x"}, "not empty"),
    "output is a file": (["train", "c.yaml", "--output-dir", "out"], {"c.yaml": GOOD, "out": "x"}, "out"),
    "compare no models": (["compare", "c.yaml"], {"c.yaml": GOOD.replace("model: {name: tiny-bert, max_length: 32}\n", "") + "models: []\n"}, "at least one entry"),
    "compare duplicate labels": (["compare", "c.yaml"], {"c.yaml": "data: {source: train.csv}\nmodels: [{name: tfidf-logreg}, {name: tfidf-logreg}]\n"}, "duplicate label"),
    "compare --seeds 0": (["compare", "c.yaml", "--seeds", "0"], {"c.yaml": "data: {source: train.csv}\nmodels: [{name: tfidf-logreg}]\n"}, "--seeds"),
    "sweep without space": (["sweep", "c.yaml"], {"c.yaml": GOOD}, "sweep"),
    "sweep log_uniform overflow": (["sweep", "c.yaml"], {"c.yaml": SWEEP + "    learning_rate: {distribution: log_uniform, min: 0.0001, max: 1000}\n"}, "log_uniform_values"),
    "sweep unknown parameter": (["sweep", "c.yaml"], {"c.yaml": SWEEP + "    wobble: {values: [1, 2]}\n"}, "wobble"),
    "sweep unknown distribution": (["sweep", "c.yaml"], {"c.yaml": SWEEP + "    learning_rate: {distribution: gauss, min: 0, max: 1}\n"}, "gauss"),
    "sweep value out of range": (["sweep", "c.yaml"], {"c.yaml": SWEEP + "    lora_dropout: {distribution: uniform, min: 0, max: 2}\n"}, "lora.dropout"),
    "sweep unknown metric": (["sweep", "c.yaml"], {"c.yaml": SWEEP.replace("method: random", "method: random\n  metric: {name: auc}") + "    lora_rank: {values: [4, 8]}\n"}, "auc"),
    "predict not a run": (["predict", ".", "--input", "val.csv", "--output", "p.csv"], {}, "not a lorabench run folder"),
    "predict input missing": (["predict", "{run}", "--input", "gone.csv", "--output", "p.csv"], {}, "gone.csv"),
    "predict no text column": (["predict", "{run}", "--input", "n.csv", "--output", "p.csv"], {"n.csv": "id,body\n1,a\n"}, "no column 'text'"),
    "predict empty input": (["predict", "{run}", "--input", "n.csv", "--output", "p.csv"], {"n.csv": "id,text\n"}, "no rows"),
    "predict bad output type": (["predict", "{run}", "--input", "val.csv", "--output", "p.xlsx"], {}, "unsupported file type"),
    "predict output is a folder": (["predict", "{run}", "--input", "val.csv", "--output", "d"], {"d/x": "1"}, "is a folder"),
    "predict threshold": (["predict", "{run}", "--input", "val.csv", "--output", "p.csv", "--threshold", "2"], {}, "--threshold"),
    "predict batch size": (["predict", "{run}", "--input", "val.csv", "--output", "p.csv", "--batch-size", "0"], {}, "--batch-size"),
    "predict kaggle without id": (["predict", "{run}", "--input", "n.csv", "--output", "p.csv", "--format", "kaggle"], {"n.csv": "text\nfire\n"}, "'id' column"),
    "export into non-empty folder": (["export", "{run}", "out"], {"out/keep.txt": "x"}, "not empty"),
    "export not a run": (["export", ".", "out"], {}, "not a lorabench run folder"),
    "config is a folder": (["train", "."], {}, "is a folder"),
    "duplicate column names": (["train", "c.yaml", "--set", "data.source=d.csv"], {"c.yaml": GOOD, "d.csv": "text,text,target\na,b,1\nc,d,0\n"}, "more than once"),
    "wrong delimiter": (["train", "c.yaml", "--set", "data.delimiter=;"], {"c.yaml": GOOD}, "data.delimiter"),
    "negative max_steps": (["train", "c.yaml", "--set", "train.max_steps=-3"], {"c.yaml": GOOD}, "train.max_steps"),
    "unknown argument": (["models", "--bogus"], {}, "unrecognized arguments: --bogus"),
    "missing argument": (["predict", "{run}", "--input", "val.csv"], {}, "--output"),
    "export into a file": (["export", "{run}", "f.txt"], {"f.txt": "x"}, "is a file"),
    "sweep max_length over the limit": (["sweep", "c.yaml"], {"c.yaml": SWEEP + "    max_length: {values: [32, 800]}\n"}, "model.max_length 800"),
    "report missing folder": (["report", "nowhere"], {}, "nowhere"),
    "report empty folder": (["report", "empty"], {"empty/.keep": ""}, "no run.json"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, trained, tmp_path, monkeypatch, capsys):
    argv, given, expect = CASES[case]
    _rows(64).to_csv(tmp_path / "train.csv", index=False)
    _rows(16).to_csv(tmp_path / "val.csv", index=False)
    for name, text in given.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
    monkeypatch.chdir(tmp_path)
    before = files(tmp_path)
    try:
        code = main([a.replace("{run}", str(trained)) for a in argv])
    except SystemExit as e:  # argparse's own errors (unknown or missing arguments)
        code = e.code
    err = capsys.readouterr().err
    lines = [x for x in err.strip().splitlines() if not x.startswith("lorabench: warning:")]
    assert code == 2, (case, err)
    assert len(lines) == 1 and lines[0].startswith("lorabench: error: "), (case, err)
    assert expect in lines[0], (case, lines[0])
    assert "Traceback" not in err
    assert files(tmp_path) == before, case


def test_the_matrix_has_at_least_30_bad_inputs():
    assert len(CASES) >= 30


def test_library_errors_keep_their_cause(tmp_path):
    from lorabench.config import DataConfig, read_yaml
    from lorabench.data import load_splits
    from lorabench.errors import ConfigError, DataError
    (tmp_path / "l.csv").write_bytes(b"text,target\ncaf\xe9,1\nx,0\n")
    with pytest.raises(DataError) as e:
        load_splits(DataConfig(source=str(tmp_path / "l.csv")))
    assert isinstance(e.value.__cause__, UnicodeDecodeError)
    (tmp_path / "c.yaml").write_text("a: [")
    with pytest.raises(ConfigError) as e:
        read_yaml(tmp_path / "c.yaml")
    assert e.value.__cause__ is not None


@pytest.mark.system
def test_a_bad_input_through_the_console_script_has_no_traceback(tmp_path):
    import subprocess
    import sys
    (tmp_path / "c.yaml").write_text("train: {epochs: zero}\n")
    r = subprocess.run([sys.executable, "-m", "lorabench.cli", "train", str(tmp_path / "c.yaml")],
                       capture_output=True, text=True, cwd=tmp_path, env={**os.environ})
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "lorabench: error: train.epochs: expected a number, got 'zero'"], r.stderr
    assert not (tmp_path / "runs").exists()


def test_secrets_and_names_stay_out_of_records_and_outside_paths(tmp_path, monkeypatch, capsys):
    """No secret from the environment reaches run.json, config.yaml, reports or output; a name or label
    with path parts cannot write outside the output folder."""
    secrets = {"WANDB_API_KEY": "wandb-secret-9f8e7d", "HF_TOKEN": "hf_secret_1a2b3c",
               "OPENAI_API_KEY": "sk-secret-4d5e6f", "PGPASSWORD": "pg-secret-7a8b"}
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    work = tmp_path / "work"
    work.mkdir()
    _rows(64).to_csv(work / "train.csv", index=False)
    _rows(16).to_csv(work / "val.csv", index=False)
    (work / "c.yaml").write_text("name: ../../escape\ndata: {source: train.csv, val: val.csv}\n"
                                 "models: [{name: tfidf-logreg, label: ../../../evil}]\n")
    (work / "t.yaml").write_text(GOOD.replace("name: g", "name: ../../../escape"))
    monkeypatch.chdir(work)
    assert main(["compare", "c.yaml"]) == 0
    assert main(["train", "t.yaml"]) == 0
    out = capsys.readouterr()
    inside = {p.resolve() for p in work.rglob("*")}
    outside = [p for p in tmp_path.rglob("*") if p.resolve() not in inside and p != work]
    assert outside == [], outside
    written = [p for p in (work / "runs").rglob("*") if p.is_file()]
    assert any(p.name == "run.json" for p in written) and any(p.name == "report.html" for p in written)
    for p in written:
        data = p.read_bytes()
        for v in secrets.values():
            assert v.encode() not in data, (p, v)
    for v in secrets.values():
        assert v not in out.out + out.err


def test_trust_remote_code_stays_off_and_weights_load_from_safetensors_only(tmp_path, capsys):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from lorabench.config import ModelConfig
    from lorabench.models import resolve_source
    # a model folder whose config asks for custom code: the code must not run unless trust_remote_code is set
    remote = tmp_path / "remote"
    remote.mkdir()
    marker = tmp_path / "code-ran"
    (remote / "config.json").write_text(json.dumps({"model_type": "evil", "architectures": ["EvilModel"],
                                                    "auto_map": {"AutoConfig": "evil.EvilConfig"}}))
    (remote / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    _rows(64).to_csv(tmp_path / "train.csv", index=False)
    _rows(16).to_csv(tmp_path / "val.csv", index=False)
    (tmp_path / "c.yaml").write_text(GOOD)
    assert main(["train", str(tmp_path / "c.yaml"), "--set", f"model.name={remote}",
                 "--output-dir", str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err
    assert "trust_remote_code" in err, err
    assert not marker.exists()
    # a checkpoint in pickle format only (.bin): refused by default, loaded when the user opts in
    src = Path(resolve_source(ModelConfig(name="tiny-bert")).path)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    cfg = AutoConfig.from_pretrained(src)
    model = AutoModelForSequenceClassification.from_pretrained(src)
    cfg.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            (pickled / f.name).write_bytes(f.read_bytes())
    args = ["train", str(tmp_path / "c.yaml"), "--set", f"model.name={pickled}"]
    assert main(args + ["--output-dir", str(tmp_path / "r2")]) == 2
    err = [x for x in capsys.readouterr().err.strip().splitlines() if not x.startswith("lorabench: warning:")]
    assert len(err) == 1 and "cannot load weights" in err[0], err
    assert main(args + ["--set", "model.use_safetensors=false", "--output-dir", str(tmp_path / "r3")]) == 0
