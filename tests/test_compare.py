import csv
import json

from lorabench.cli import main

CONFIG = """
name: cmp
data: {max_train_samples: 160, max_eval_samples: 80}
model: {max_length: 48}
train: {epochs: 2, batch_size: 16, learning_rate: 1.0e-3}
lora: {r: 4}
models:
  - name: tfidf-logreg
  - name: tiny-bert
    label: tiny BERT
  - name: tiny-llama
    lora: {r: 2}
%s
"""


def _write(tmp_path, extra=""):
    p = tmp_path / "cmp.yaml"
    p.write_text(CONFIG % extra)
    return p


def test_compare_writes_every_report_file_and_reuses_runs(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", str(_write(tmp_path)), "--output-dir", str(out)]) == 0
    for f in ("results.csv", "results.json", "results.md", "report.html", "data.json", "compare.yaml",
              "plots/f1.png", "plots/f1_vs_time.png", "plots/memory.png", "plots/f1_per_epoch.png", "plots/lengths.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["label"] for r in rows] == ["tfidf-logreg", "tiny BERT", "tiny-llama", "Ensemble: mean of top 3"]
    assert [r["kind"] for r in rows] == ["model"] * 3 + ["ensemble"]  # the ensemble row: tests/test_ensemble.py
    for r in rows[:3]:
        assert 0 <= float(r["val_f1"]) <= 1 and r["runs"] == "1" and r["failed"] == "0"
    recs = [json.loads(p.read_text()) for p in sorted(out.glob("*/run.json"))]
    assert len({r["data"]["fingerprint"] for r in recs}) == 1  # identical split for every model
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "tiny BERT" in html and "http" not in html.split("<body>")[1][:2000]
    printed = capsys.readouterr().out
    assert "[3/3] tiny-llama" in printed and "report:" in printed

    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/run.json")}
    assert main(["compare", str(_write(tmp_path)), "--output-dir", str(out)]) == 0
    assert "reused" in capsys.readouterr().out
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.glob("*/run.json")}

    # a model removed from the config: its old run stays on disk but leaves the report
    cfg2 = tmp_path / "cmp2.yaml"
    cfg2.write_text((CONFIG % "").replace("  - name: tiny-llama\n    lora: {r: 2}\n", ""))
    assert main(["compare", str(cfg2), "--output-dir", str(out)]) == 0
    assert [r["label"] for r in csv.DictReader((out / "results.csv").open())] == ["tfidf-logreg", "tiny BERT",
                                                                                "Ensemble: mean of top 2"]
    assert (out / "tiny-llama-seed42" / "run.json").is_file()
    assert main(["compare", str(_write(tmp_path)), "--output-dir", str(out)]) == 0  # back: reused again

    before = (out / "results.csv").read_bytes()
    (out / "results.csv").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "results.csv").read_bytes() == before


def test_a_model_that_fails_at_run_time_is_listed_the_rest_complete_and_compare_exits_1(tmp_path, capsys,
                                                                                         broken_model):
    out = tmp_path / "out"
    extra = f"  - name: {broken_model}\n    label: broken\n"
    assert main(["compare", str(_write(tmp_path, extra)), "--output-dir", str(out), "--seeds", "2"]) == 1
    printed = capsys.readouterr()
    failed_lines = [x for x in printed.out.splitlines() if "broken (seed 42): FAILED" in x]
    assert len(failed_lines) == 1 and "SafetensorError" in failed_lines[0], printed.out  # the reason, not
    assert "no record written" not in printed.out                                             # "no record"
    last = printed.err.strip().splitlines()[-1]
    assert last.startswith("lorabench: error: 2 run(s) failed, the others are in the report: broken-seed42: "), last
    rows = {r["label"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert rows["broken"]["failed"] == "2" and rows["broken"]["runs"] == "0"
    assert rows["tiny BERT"]["runs"] == "2" and rows["tiny BERT"]["val_f1_std"] != ""
    failed = json.loads((out / "broken-seed42" / "run.json").read_text())
    assert failed["status"] == "failed" and "SafetensorError" in failed["error"]
    assert "SafetensorError" in (out / "report.html").read_text()
    assert "failed" in (out / "results.md").read_text()


def test_a_mistake_in_any_entry_stops_compare_before_anything_trains(tmp_path, capsys):
    """An unknown model name, LoRA targets the model does not have, fp16 on a CPU: each found for every entry
    before the first trains (the first entry is the TF-IDF baseline, which used to train first)."""
    for extra, named in (("  - name: tiny-bret\n", "models[3] (tiny-bret): unknown model name 'tiny-bret'"),
                         ("  - name: tiny-bert\n    label: b\n    lora: {target_modules: [no_such_module]}\n",
                          "models[3] (b): lora.target_modules: no module named 'no_such_module'"),
                         ("  - name: tiny-bert\n    label: h\n    model: {dtype: float16}\n",
                          "models[3] (h): model.dtype: float16 training needs a GPU")):
        out = tmp_path / "out"
        capsys.readouterr()
        assert main(["compare", str(_write(tmp_path, extra)), "--output-dir", str(out)]) == 2
        printed = capsys.readouterr()
        assert printed.out == "" and printed.err.strip().splitlines() == [f"lorabench: error: {named}"] or \
            printed.err.strip().splitlines()[0].startswith(f"lorabench: error: {named}"), printed
        assert not out.exists()


def test_data_command_prints_the_summary(tmp_path, capsys):
    assert main(["data", str(_write(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "rows: train 160, val 80" in out and "tokens (tiny BERT)" in out and "missing values: keyword" in out


def test_rerun_with_a_changed_config_or_force_keeps_the_finished_runs(tmp_path):
    """compare never destroys results: a finished run whose config changed, or one re-trained with --force,
    is kept beside the new one under a name that says why; the report shows the current runs only."""
    import json as _json
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: keep\ndata: {max_train_samples: 300, max_eval_samples: 100}\nmodels: [{name: tfidf-logreg}]\n")
    out = tmp_path / "out"
    assert main(["compare", str(cfg), "--output-dir", str(out)]) == 0
    first = (out / "tfidf-logreg-seed42" / "run.json").read_bytes()
    assert main(["compare", str(cfg), "--output-dir", str(out), "--set", "train.learning_rate=0.001"]) == 0
    kept = sorted(out.glob("tfidf-logreg-seed42.config-changed-*"))
    assert len(kept) == 1 and (kept[0] / "run.json").read_bytes() == first
    assert main(["compare", str(cfg), "--output-dir", str(out), "--set", "train.learning_rate=0.001", "--force"]) == 0
    assert len(list(out.glob("tfidf-logreg-seed42.forced-rerun-*"))) == 1
    report = _json.loads((out / "results.json").read_text())
    assert [r["run_dir"] for r in report["runs"]] == ["tfidf-logreg-seed42"]
    assert _json.loads((out / "tfidf-logreg-seed42" / "run.json").read_text())["config"]["train"]["learning_rate"] == 0.001
