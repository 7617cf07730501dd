"""The report's figures, as PNG bytes from matplotlib `Figure` objects (pyplot is never touched, so the caller's
plotting backend and open figures are left alone). Every number comes from the report's rows, its statistics
(`reporting.uncertainty`) and its error analysis (`reporting.error_analysis`)."""
from __future__ import annotations

import io

from lorabench.runs.layout import safe_name


def plots(rows: list[dict], data: dict | None, stats: dict | None = None, analysis: dict | None = None) -> dict[str, bytes]:
    """{file name: PNG bytes} of every figure the rows support: f1.png (val F1 with its interval per model),
    quality_vs_serving.png, f1_vs_time.png, memory.png, f1_per_epoch.png, confusion_<label>.png, roc_pr.png,
    reliability.png, lengths.png."""
    import matplotlib
    from matplotlib.figure import Figure
    out: dict[str, bytes] = {}
    ok = [r for r in rows if r["val_f1"] is not None]
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]

    def subplots(figsize):  # a standalone Figure with one Axes; pyplot is never touched
        fig = Figure(figsize=figsize)
        return fig, fig.subplots()

    def save(fig, name):
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
        out[name] = buf.getvalue()

    if ok:
        xs = range(len(ok))
        save(_f1_figure(subplots, ok, colors, stats or {}), "f1.png")
        if any(r.get("predict_rows_per_second") for r in ok):
            save(_serving_figure(subplots, ok, colors, stats or {}), "quality_vs_serving.png")

        fig, ax = subplots(figsize=(7, 3.6))
        for i, r in enumerate(ok):
            ax.errorbar(r["train_seconds"], r["val_f1"], yerr=_yerr(r), fmt="o", ms=8,
                        color=colors[i % len(colors)], label=r["label"], capsize=4)
        ax.set_xscale("log")
        from matplotlib.ticker import FuncFormatter, NullFormatter
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis run into each other
        ax.set_xlabel("training time (s, log scale)")
        ax.set_ylabel("val F1 (whiskers: " + _interval_kind(ok) + ")")
        ax.set_title("Quality against training cost")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, "f1_vs_time.png")

        fig, ax = subplots(figsize=(7, 3.6))
        ax.bar(list(xs), [r["peak_memory_mb"] or 0 for r in ok], color=[colors[i % len(colors)] for i in xs])
        ax.set_xticks(list(xs), [r["label"] for r in ok], rotation=15)
        ax.set_ylabel("peak memory (MB)")
        ax.set_title("Peak memory during training")
        save(fig, "memory.png")

        curves = [(i, r) for i, r in enumerate(ok) if any(r["history"])]
        if curves:
            fig, ax = subplots(figsize=(7, 3.6))
            for i, r in curves:
                for j, h in enumerate(r["history"]):
                    if h:
                        ax.plot([x["epoch"] for x in h], [x["f1"] for x in h], marker="o", alpha=0.85,
                                color=colors[i % len(colors)], label=r["label"] if j == 0 else None)
            ax.set_xlabel("epoch")
            ax.set_ylabel("val F1")
            ax.set_title("Val F1 per epoch (one line per " + ("run)" if any(r.get("folds") for r in ok) else "seed)"))
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            save(fig, "f1_per_epoch.png")

    for i, r in enumerate(ok):
        if r.get("detail"):
            save(_confusion_figure(subplots, r["label"], r["detail"]), confusion_png(r["label"]))
    curves = [(i, r) for i, r in enumerate(ok) if (r.get("detail") or {}).get("curves")]
    if curves:
        fig = Figure(figsize=(9, 3.8))
        roc_ax, pr_ax = fig.subplots(1, 2)
        for i, r in curves:
            c, d = colors[i % len(colors)], r["detail"]
            roc_ax.plot(d["curves"]["roc"]["fpr"], d["curves"]["roc"]["tpr"], color=c,
                        label=f"{r['label']} (AUC {d['roc_auc']:.3f})")
            pr_ax.plot(d["curves"]["pr"]["recall"], d["curves"]["pr"]["precision"], color=c,
                       label=f"{r['label']} (AP {d['pr_auc']:.3f})")
        roc_ax.plot([0, 1], [0, 1], ls="--", color="#999", lw=1)
        roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (val)")
        pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (val)", ylim=(0, 1.02))
        for ax in (roc_ax, pr_ax):
            ax.legend(fontsize=7, loc="lower right" if ax is roc_ax else "lower left")
            ax.grid(alpha=0.3)
        save(fig, "roc_pr.png")

    curves = [(i, r) for i, r in enumerate(ok) if r["label"] in ((analysis or {}).get("calibration") or {})]
    if curves:
        fig, ax = subplots(figsize=(5.5, 4.2))
        ax.plot([0, 1], [0, 1], ls="--", color="#999", lw=1, label="perfectly calibrated")
        kind = "positive"
        for i, r in curves:
            cal = analysis["calibration"][r["label"]]
            kind = cal["curve"]["kind"]
            ax.plot(cal["curve"]["mean_predicted"], cal["curve"]["observed"], marker="o", ms=4,
                    color=colors[i % len(colors)], label=f"{r['label']} (ECE {cal['ece']:.3f})")
        what = "P(positive)" if kind == "positive" else "confidence of the most probable class"
        ax.set(xlabel=f"mean predicted {what}", ylabel="observed share" if kind == "positive" else "accuracy",
               xlim=(0, 1), ylim=(0, 1), title="Reliability (val, 10 bins; ECE: 15 bins of the top probability)")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
        save(fig, "reliability.png")

    if data and data.get("char_histogram"):
        h = data["char_histogram"]
        fig, ax = subplots(figsize=(7, 3))
        edges = h["edges"]
        ax.bar(edges[:-1], h["counts"], width=[b - a for a, b in zip(edges[:-1], edges[1:])], align="edge",
               color=colors[0], edgecolor="white")
        ax.set_xlabel("text length (characters)")
        ax.set_ylabel("rows (train + val)")
        ax.set_title("Text lengths")
        save(fig, "lengths.png")
    return out

def confusion_png(label: str) -> str:
    return f"confusion_{safe_name(label)}.png"


def _confusion_figure(subplots, label: str, detail: dict):
    """A confusion matrix as counts, shaded by the share of each true class (rows sum to 1)."""
    import numpy as np
    cm = np.asarray(detail["confusion_matrix"])
    names = detail["labels"]
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = 1.6 + 0.7 * len(names)
    fig, ax = subplots(figsize=(size + 1.2, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(cm):
        ax.text(j, i, f"{n}", ha="center", va="center", color="white" if share[i, j] > 0.6 else "#222", fontsize=9)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{label}: confusion matrix (val)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return fig


def _yerr(r: dict) -> list[list[float]]:
    """Asymmetric error bars from a row's val F1 interval (zero-length without one)."""
    lo, hi, f1 = r.get("val_f1_low"), r.get("val_f1_high"), r["val_f1"]
    return [[f1 - lo if lo is not None else 0.0], [hi - f1 if hi is not None else 0.0]]


def _interval_kind(rows: list[dict]) -> str:
    if any(r.get("folds") for r in rows):
        return "95% corrected-t interval over folds"
    return "95% bootstrap interval over val rows"


def _f1_figure(subplots, ok: list[dict], colors: list[str], stats: dict):
    """Val F1 per model as a dot with its interval, on the whole 0-1 axis (a bar chart on a cut axis makes a 0.002
    gap look like a step); the best model and those not separable from it filled, the others hollow."""
    group = set(stats.get("group") or [])
    fig, ax = subplots(figsize=(7, 0.9 + 0.45 * len(ok)))
    for i, r in enumerate(ok):
        y = len(ok) - 1 - i
        filled = r["label"] in group or not group
        ax.errorbar(r["val_f1"], y, xerr=_yerr(r), fmt="o", ms=7, capsize=4, color=colors[i % len(colors)],
                    mfc=colors[i % len(colors)] if filled else "white")
        ax.text(1.005, y, f"{r['val_f1']:.3f}", va="center", fontsize=8, transform=ax.get_yaxis_transform())
    ax.set_yticks(range(len(ok)), [r["label"] for r in reversed(ok)])
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(ok) - 0.4)
    ax.set_xlabel("val F1 (whiskers: " + _interval_kind(ok) + ")")
    ax.grid(axis="x", alpha=0.3)
    title = "Quality"
    if group:
        title += ": filled = best and not separable from it"
    ax.set_title(title, fontsize=10)
    return fig


def _serving_figure(subplots, ok: list[dict], colors: list[str], stats: dict):
    """Val F1 (with its interval) against the time to predict one row in bulk (ms, log scale); filled: the group
    not separable from the best."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    group = set(stats.get("group") or [])
    fig, ax = subplots(figsize=(7, 3.8))
    for i, r in enumerate(ok):
        if not r.get("predict_rows_per_second"):
            continue
        c = colors[i % len(colors)]
        filled = r["label"] in group or not group
        ax.errorbar(1000 / r["predict_rows_per_second"], r["val_f1"], yerr=_yerr(r), fmt="o", ms=8, capsize=4,
                    color=c, mfc=c if filled else "white",
                    label=r["label"] + (" (not separable from the best)" if filled and group and
                                        r["label"] != stats.get("best") else " (best)" if r["label"] == stats.get("best")
                                        else ""))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # a short log axis still gets several labels
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("ms per row predicted in batches (log scale; lower is cheaper)")
    ax.set_ylabel("val F1")
    ax.set_title("Quality against serving cost")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig
