import os
import tempfile

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
# trackio reads its folder once, when first imported (by whichever test gets there first): never $HF_HOME
os.environ.setdefault("TRACKIO_DIR", tempfile.mkdtemp(prefix="lorabench-test-trackio-"))
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    """Tiny models and GGUF conversions go to a per-session cache, never ~/.cache."""
    os.environ.setdefault("LORABENCH_CACHE", str(tmp_path_factory.mktemp("lorabench-cache")))
    from lorabench.quiet import quiet_libraries
    quiet_libraries()
    yield


@pytest.fixture
def tiny_config(tmp_path):
    """Write a small train config and return its path."""
    def make(model="tiny-llama", extra=""):
        p = tmp_path / f"{model}.yaml"
        p.write_text(f"""
name: t
data: {{max_train_samples: 160, max_eval_samples: 80}}
model: {{name: {model}, max_length: 48}}
train: {{epochs: 1, batch_size: 16, learning_rate: 1.0e-3, logging_steps: 5}}
{extra}
""")
        return p
    return make


@pytest.fixture
def broken_model(tmp_path):
    """A model folder whose config.json is fine (every check before training passes) and whose weights are not:
    a run of it fails at run time, when its weights load."""
    import shutil

    from lorabench.config import ModelConfig
    from lorabench.models import resolve_source
    folder = tmp_path / "broken-model"
    shutil.copytree(resolve_source(ModelConfig(name="tiny-bert")).path, folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    return folder


@pytest.fixture(autouse=True)
def _serving_cost_in_this_process(request, monkeypatch):
    """Runs measure their serving cost (train.serving_cost) here in the test's own process: the fresh process the
    library starts for it spends ~4 s importing torch and transformers per run. Tests marked `fresh_process`
    keep the library's fresh process; CLI tests in subprocesses measure as users' runs do."""
    if request.node.get_closest_marker("fresh_process"):
        yield
        return
    from lorabench.inference import serving

    def here(path, texts, **kw):
        return serving.measure(path, texts)
    monkeypatch.setattr(serving, "in_fresh_process", here)
    yield


@pytest.fixture(scope="session")
def chromium():
    """Playwright's sync API and the path of Debian's Chromium (tests/browser_support.py), installed here if
    missing; skips, saying why, when that cannot be done."""
    from browser_support import chromium_or_skip
    return chromium_or_skip()
