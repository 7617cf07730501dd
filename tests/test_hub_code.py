"""No code from the Hub unless the user asks (issue 21): train, predict and export of a plain and of a 4-bit tiny
run never call `kernels.get_kernel` (bitsandbytes' CPU backend did on import, and peft imported bitsandbytes
whenever it was installed), `kernels.kernelize` (transformers 5.25's default `use_kernels`) or huggingface_hub's
download functions; bitsandbytes is imported only by the 4-bit run. `model.trust_hub_kernels: true` lets them
through.

Each scenario runs the CLI in a fresh interpreter with spies installed before anything else is imported.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("bitsandbytes")
pytest.importorskip("kernels")
pytestmark = pytest.mark.system  # the CLI in fresh interpreters, spies installed first

SPY = textwrap.dedent("""
    import functools, importlib, json, sys
    calls = []
    def spy(module, attr):
        m = importlib.import_module(module)
        f = getattr(m, attr)
        @functools.wraps(f)
        def wrapper(*a, **k):
            calls.append(f"{module}.{attr}({a[0] if a else ''!r})")
            return f(*a, **k)
        setattr(m, attr, wrapper)
    for module, attr in [("kernels", "get_kernel"), ("kernels", "kernelize"),
                         ("huggingface_hub", "hf_hub_download"), ("huggingface_hub.file_download", "hf_hub_download"),
                         ("huggingface_hub", "snapshot_download"),
                         ("huggingface_hub._snapshot_download", "snapshot_download")]:
        spy(module, attr)
    from lorabench.cli import main
    phases = {}
    for phase, argv in json.loads(sys.argv[1]):
        before = len(calls)
        rc = main(argv)
        phases[phase] = {"rc": rc, "calls": calls[before:], "bitsandbytes": "bitsandbytes" in sys.modules}
    print("RESULT " + json.dumps(phases))
""")


def run_phases(tmp_path: Path, phases: list) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", SPY, json.dumps(phases)], capture_output=True, text=True, cwd=tmp_path,
                       env=env, timeout=600)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert r.returncode == 0 and line, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(line[len("RESULT "):])


def config(tmp_path: Path, name: str, model: str) -> str:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"name: {name}\ndata: {{max_train_samples: 64, max_eval_samples: 32}}\n"
                 f"model: {{{model}, max_length: 32}}\ntrain: {{epochs: 1, batch_size: 16}}\n")
    return str(p)


def cycle(tmp_path: Path, name: str, model: str) -> list:
    """train, predict, export (adapter and merged) of one run."""
    cfg, run = config(tmp_path, name, model), str(tmp_path / name)
    rows = tmp_path / "rows.csv"
    rows.write_text("id,text\n1,fire in the hills\n2,a lovely day\n")
    return [[f"{name} train", ["train", cfg, "--output-dir", run]],
            [f"{name} predict", ["predict", run, "--input", str(rows), "--output", str(tmp_path / f"{name}.csv")]],
            [f"{name} export", ["export", run, str(tmp_path / f"{name}-adapter")]],
            [f"{name} export --merge", ["export", run, str(tmp_path / f"{name}-merged"), "--merge"]]]


def test_plain_and_4bit_runs_load_no_code_from_the_hub(tmp_path):
    plain = cycle(tmp_path, "plain", "name: tiny-llama")
    quantized = cycle(tmp_path, "q4", "name: tiny-llama, quantization: 4bit")
    phases = run_phases(tmp_path, plain + quantized)
    assert all(p["rc"] == 0 for p in phases.values()), phases
    assert {k: p["calls"] for k, p in phases.items() if p["calls"]} == {}
    assert not any(phases[name]["bitsandbytes"] for name, _ in plain), "bitsandbytes imported by a plain run"
    assert phases["q4 train"]["bitsandbytes"]  # the 4-bit run needs it (its own CPU code, no Hub kernel)
    log = (tmp_path / "q4" / "run.log").read_text()
    assert "without Hub kernels" in log


def test_trust_hub_kernels_lets_bitsandbytes_fetch_its_kernel(tmp_path):
    """The opt-in reaches the libraries: bitsandbytes asks `kernels` for its CPU kernel (offline here, so it falls
    back to its own code and the run still trains)."""
    phases = run_phases(tmp_path, cycle(tmp_path, "trusted", "name: tiny-llama, quantization: 4bit, "
                                                             "trust_hub_kernels: true")[:1])
    assert phases["trusted train"]["rc"] == 0
    assert any("quantization-bitsandbytes" in c for c in phases["trusted train"]["calls"]), phases


def test_hidden_modules_come_back_as_they_were():
    from lorabench.models import hub_code
    before = sys.modules.get("json")
    with hub_code.hidden("json", "no_such_module_xyz"):
        with pytest.raises(ImportError):
            import json as _  # noqa: F401
        with pytest.raises(ImportError):
            import no_such_module_xyz  # noqa: F401
    assert sys.modules.get("json") is before and "no_such_module_xyz" not in sys.modules
