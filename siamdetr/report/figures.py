"""Figure 4 (AP against IoU threshold, Siamese DETR vs UP-DETR) and Figure 6 (AP against fine-tuning
epoch, every method), as PNG and SVG. Mean over seeds, with a band of ± one standard deviation."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on CI or clusters
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from siamdetr.report.paper import PaperTable  # noqa: E402
from siamdetr.report.runs import IOU_POINTS  # noqa: E402
from siamdetr.spread import mean_std

METHOD_STYLE = {
    "from scratch": ("tab:gray", "--"),
    "UP-DETR": ("tab:blue", "-"),
    "DETReg": ("tab:green", "-"),
    "ours": ("tab:red", "-"),
}
AREAS = (("AP", "all objects"), ("APs", "small"), ("APm", "medium"), ("APl", "large"))


def _band(ax, xs: list[float], samples: list[list[float]], label: str, colour: str, style: str) -> None:
    mean, std = zip(*(mean_std(s) for s in samples), strict=True)
    ax.plot(xs, mean, style, color=colour, marker="o", markersize=3, label=f"{label} (n={min(map(len, samples))})")
    lower = [max(0.0, m - s) for m, s in zip(mean, std, strict=True)]  # AP is never negative
    ax.fill_between(
        xs,
        lower,
        [m + s for m, s in zip(mean, std, strict=True)],
        color=colour,
        alpha=0.15,
        linewidth=0,
    )


def figure4(runs: pd.DataFrame, pairs: Mapping[str, str], title: str, out: Path) -> list[str]:
    """AP at IoU 0.50:0.05:0.95, overall and per object size, for the runs of `pairs` ({label: run_key}).
    Returns the MLflow run ids it used."""
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), sharex=True)
    used: list[str] = []
    thresholds = [t / 100 for t in IOU_POINTS]
    for ax, (prefix, area) in zip(axes, AREAS, strict=True):
        for label, key in pairs.items():
            sel = runs[runs["run_key"] == key] if not runs.empty else runs
            cols = [f"{prefix}_iou{t}" for t in IOU_POINTS]
            if sel.empty or not all(c in sel for c in cols):
                continue
            samples = [[float(v) for v in sel[c] if pd.notna(v)] for c in cols]
            if not all(samples):
                continue
            colour, style = METHOD_STYLE.get(label, ("black", "-"))
            _band(ax, thresholds, samples, label, colour, style)
            used += list(sel["run_id"])
        ax.set_title(area)
        ax.set_xlabel("IoU threshold")
        ax.grid(alpha=0.3)
        _from_zero(ax)
    axes[0].set_ylabel("AP (%)")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    else:
        for ax in axes:
            ax.text(0.5, 0.5, "no runs yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out)
    return sorted(set(used))


def figure6(
    tables: Mapping[str, PaperTable], runs: pd.DataFrame, curves: Mapping[str, Mapping[int, float]], out: Path
) -> list[str]:
    """AP against fine-tuning epoch, one panel per (dataset, DETR, queries, schedule) group of ImageNet-
    pretrained rows of Tables 1-2, one line per method. `curves`: {run_id: {epoch: AP}}."""
    panels = []
    for name, dataset in (("table1", "COCO"), ("table2", "VOC")):
        for group in dict.fromkeys(r.group for r in tables[name].rows):
            rows = [r for r in tables[name].rows if r.group == group and r.run]
            if rows and "COCO-pretrained" not in group:
                panels.append((f"{dataset}\n{group.replace(', ImageNet-pretrained', '')}", rows))
    ncols = min(5, max(1, len(panels)))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.9 * nrows), squeeze=False)
    used: list[str] = []
    for ax, (title, rows) in zip(axes.flat, panels, strict=False):
        for r in rows:
            sel = runs[runs["run_key"] == r.run] if not runs.empty else runs
            per_seed = [curves.get(rid, {}) for rid in sel.get("run_id", [])]
            per_seed = [c for c in per_seed if c]
            if not per_seed:
                continue
            epochs = sorted(set.intersection(*(set(c) for c in per_seed)))
            if not epochs:
                continue
            colour, style = METHOD_STYLE.get(r.labels["method"], ("black", "-"))
            _band(ax, epochs, [[c[e] for c in per_seed] for e in epochs], r.labels["method"], colour, style)
            used += list(sel["run_id"])
        ax.set_title(title, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("fine-tuning epoch")
        ax.set_ylabel("AP (%)")
        ax.grid(alpha=0.3)
        _from_zero(ax)
        if not ax.get_legend_handles_labels()[0]:
            ax.text(0.5, 0.5, "no runs yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    legend = {}  # one legend for the figure: a method has the same colour in every panel
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label.split(" (n=")[0], handle)
    counts = {len(runs[runs["run_key"] == r.run]) for _, rows in panels for r in rows} if not runs.empty else set()
    seeds = sorted(counts - {0})
    n = f"{seeds[0]} " if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]} " if seeds else ""
    if legend:
        fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=len(legend), fontsize=9)
    fig.suptitle(
        f"Figure 6. Convergence: AP against fine-tuning epoch, ImageNet pretraining (mean ± std over {n}seeds)"
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    _save(fig, out)
    return sorted(set(used))


def _from_zero(ax: plt.Axes) -> None:
    """AP axes start at 0; an all-zero panel still shows a readable 0-1 range."""
    top = ax.get_ylim()[1]
    ax.set_ylim(0, top if top > 0 else 1)


def _save(fig: plt.Figure, out: Path) -> None:
    """PNG and SVG, each written to a temp name and renamed. Byte-identical for identical data: no date in
    the metadata and SVG element ids from a fixed salt, so a rerun's figures diff clean."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "svg"):
        tmp = out.with_name(f".{out.name}.tmp.{ext}")
        with matplotlib.rc_context({"svg.hashsalt": "siamdetr"}):
            metadata = {"Date": None} if ext == "svg" else None
            fig.savefig(tmp, dpi=150 if ext == "png" else None, format=ext, metadata=metadata)
        tmp.replace(out.with_suffix(f".{ext}"))
    plt.close(fig)
