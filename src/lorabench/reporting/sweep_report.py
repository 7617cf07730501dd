"""Sweep results: best.yaml, trials.csv, plots and report.html, from the study and the trial run folders.
"""
from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

from lorabench.config.loading import dump_yaml, from_dict, load_yaml
from lorabench.config.schema import SweepConfig
from lorabench.config.space import to_distributions, trial_config
from lorabench.errors import LorabenchError
from lorabench.reporting.html import _html, _img
from lorabench.runs.files import write_atomic


def _load_study(folder: Path, storage: str | None):
    import optuna
    meta = json.loads((folder / "study.json").read_text())
    url = storage or meta["storage"]
    if "***" in url:
        raise LorabenchError("report: the study's storage needs a password; pass it with --storage")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=meta["study_name"], storage=url), meta
    except Exception as e:
        raise LorabenchError(f"report: cannot open study {meta['study_name']!r}: {str(e).splitlines()[0]}") from e


def _trials_csv(study) -> str:
    keys = sorted({k for t in study.trials for k in t.params})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["number", "state", "value", "duration_seconds", "cpu_seconds"] + keys + ["run_dir"])
    for t in study.trials:
        dur = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else ""
        cpu = t.user_attrs.get("cpu_seconds", "")
        w.writerow([t.number, t.state.name, "" if t.value is None else f"{t.value:.6f}",
                    f"{dur:.1f}" if dur != "" else "", f"{cpu:.1f}" if cpu != "" else ""]
                   + [t.params.get(k, "") for k in keys] + [t.user_attrs.get("run_dir", "")])
    return buf.getvalue()


def _best_yaml(folder: Path, best) -> str:

    raw = load_yaml((folder / "sweep.yaml").read_text(), str(folder / "sweep.yaml"))
    cfg = from_dict(SweepConfig, raw)
    _, fixed = to_distributions(cfg.sweep.parameters)
    exp = trial_config(cfg.base(), {**fixed, **best.params})
    head = (f"# lorabench train {folder / 'best.yaml'}\n"
            f"# Best trial {best.number} of sweep {cfg.name}: val {cfg.sweep.metric.name or 'primary metric'} = "
            f"{best.value:.4f}\n")
    return head + dump_yaml(exp)


def _plots(study) -> dict[str, bytes]:
    import warnings

    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm
    out = {}
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not done:
        return out
    jobs = [("history.png", lambda: ovm.plot_optimization_history(study))]
    if len(done) >= 2 and len({k for t in done for k in t.params}) >= 1:
        jobs.append(("importances.png", lambda: ovm.plot_param_importances(study)))
    jobs.append(("slice.png", lambda: ovm.plot_slice(study)))
    for name, fn in jobs:
        theirs = set(plt.get_fignums())  # the caller's open figures stay open
        try:
            with warnings.catch_warnings():  # optuna's experimental-API warnings; the caller's filters restored
                warnings.simplefilter("ignore")
                ax = fn()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(max(7, fig.get_size_inches()[0]), 4)
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100)
            out[name] = buf.getvalue()
        except Exception:  # an importance fit on too few distinct trials, say: skip that plot, keep the rest
            pass
        finally:
            for num in set(plt.get_fignums()) - theirs:
                plt.close(num)
    return out


def build_sweep_report(folder: Path, storage: str | None = None) -> Path:
    from optuna.trial import TrialState

    folder = Path(folder)
    study, meta = _load_study(folder, storage)
    counts = {s.name.lower(): sum(1 for t in study.trials if t.state == s) for s in TrialState}
    write_atomic(folder / "trials.csv", _trials_csv(study))
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    summary = {"study": meta["study_name"], "n_trials_requested": meta["n_trials"], "counts": counts,
               "metric": meta["metric"], "direction": meta["direction"]}
    sections = [("", f"<h1>Sweep {html.escape(meta['study_name'])}</h1><p class='sub'>"
                     f"{counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed, "
                     f"{counts['running']} running; objective: val {meta['metric']} ({meta['direction']})</p>")]
    if done:
        best = study.best_trial
        summary["best"] = {"number": best.number, "value": best.value, "params": best.params,
                           "run_dir": best.user_attrs.get("run_dir")}
        write_atomic(folder / "best.yaml", _best_yaml(folder, best))
        sections.append(("Best trial", f"<p>trial {best.number}: val {meta['metric']} <b>{best.value:.4f}</b></p><pre>"
                         + html.escape(json.dumps(best.params, indent=1)) + "</pre><p>Ready to run: "
                         f"<code>lorabench train {html.escape(str(folder / 'best.yaml'))}</code></p>"))
    write_atomic(folder / "sweep_summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    plots = _plots(study)
    (folder / "plots").mkdir(exist_ok=True)
    for name, png in plots.items():
        write_atomic(folder / "plots" / name, png)
    for name, title in (("history.png", "Optimisation history"), ("importances.png", "Parameter importances"),
                        ("slice.png", "Slice")):
        if name in plots:
            sections.append((title, _img(plots[name], title)))
    rows = list(csv.reader(io.StringIO((folder / "trials.csv").read_text())))
    table = "<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0][:-1]) + "</tr></thead><tbody>"
    table += "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r[:-1]) + "</tr>" for r in rows[1:])
    sections.append(("Trials", table + "</tbody></table>"))
    return write_atomic(folder / "report.html", _html(f"sweep {meta['study_name']} — lorabench", sections))
