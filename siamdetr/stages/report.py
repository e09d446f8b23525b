"""The `report` stage, the last: MLflow runs → reports/ (tables, figures, index.md, runs.json)."""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import statistics
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from siamdetr.config import Config
from siamdetr.io import atomic_write_json, atomic_write_text
from siamdetr.report.figures import figure4, figure6
from siamdetr.report.paper import PaperTable, load_paper
from siamdetr.report.reading import CURVE, Claim, claims
from siamdetr.report.runs import finetune_runs, metric_curves, select_matching, workspace_results
from siamdetr.report.tables import TableData, build_table, to_csv, to_latex, to_markdown
from siamdetr.tracking import redact

log = logging.getLogger(__name__)

FIG4_RUNS = {"UP-DETR": "coco-cond100-e50-in-updetr", "ours": "coco-cond100-e50-in-siamese"}


def scale_caption(cfg: Config) -> str:
    g = cfg.grid
    data = "synthetic data" if cfg.data.synthetic else "real data"
    return (
        f"Profile `{cfg.profile}` ({data}; queries ×{g.query_scale:g}, fine-tuning epochs ×{g.epoch_scale:g}, "
        f"d_model {cfg.model.d_model}, {cfg.model.backbone} backbone, seeds {g.seeds}). Ours: mean ± std over "
        "seeds (n); Δ = ours − paper, AP in percent."
    )


def run(cfg: Config, out: Path, tracking_uri: str) -> dict[str, Any]:
    """Write every table and figure and index.md; returns what was used and what is missing."""
    paper = load_paper()
    runs, selection = chosen_runs(cfg, tracking_uri)
    log.info("report: %s", selection)
    caption = scale_caption(cfg)
    tables = {name: build_table(t, runs, caption, lambda run: not_run_by(cfg, run)) for name, t in paper.items()}
    for name, t in tables.items():
        for ext, render in (("md", to_markdown), ("csv", to_csv), ("tex", to_latex)):
            atomic_write_text(out / "tables" / f"{name}.{ext}", render(t))
    fig_dir = out / "figures"
    fig4_ids = figure4(
        runs,
        FIG4_RUNS,
        "Figure 4. AP on COCO(-like) against IoU threshold, Conditional DETR (mean ± std over seeds)",
        fig_dir / "figure4",
    )
    curves = metric_curves(tracking_uri, [] if runs.empty else list(runs["run_id"]))
    fig6_ids = figure6(paper, runs, curves, fig_dir / "figure6")
    if not runs.empty:
        runs = runs.assign(
            **{CURVE: [statistics.fmean(curves[r].values()) if curves.get(r) else None for r in runs["run_id"]]}
        )
    found = claims(tables, runs, FIG4_RUNS)
    used = {name: t.run_ids for name, t in tables.items()} | {"figure4": fig4_ids, "figure6": fig6_ids}
    missing = {name: t.missing for name, t in tables.items() if t.missing}
    atomic_write_text(out / "index.md", index_md(cfg, tracking_uri, runs, tables, found, missing, out, selection))
    record = {
        "tracking_uri": tracking_uri,
        "profile": cfg.profile,
        "selection": selection,
        "runs_used": used,
        "missing": missing,
    }
    atomic_write_json(out / "runs.json", record, indent=2)
    return record


def chosen_runs(cfg: Config, tracking_uri: str) -> tuple[pd.DataFrame, str]:
    """The fine-tuning runs behind the workspace's results (their settings hash, this DVC experiment first),
    and a sentence saying so; with no results in the workspace (runs made elsewhere), the latest run per
    run and seed of the profile."""
    everything = finetune_runs(tracking_uri, profile=cfg.profile, latest_only=False)
    results = workspace_results(Path(cfg.finetune.out_dir))
    if not results:
        runs = finetune_runs(tracking_uri, profile=cfg.profile)
        return runs, (
            f"{len(runs)} runs: no finished results in `{cfg.finetune.out_dir}`, so the latest finished run of "
            f"profile {cfg.profile} per run and seed"
        )
    experiment = os.environ.get("DVC_EXP_NAME", "")
    runs = select_matching(everything, results, experiment)
    here = int((runs["dvc_exp_name"] == experiment).sum()) if not runs.empty else 0
    where = f"DVC experiment `{experiment}`" if experiment else "the workspace (no DVC experiment)"
    return runs, (
        f"{len(runs)} runs: those whose settings hash matches the {len(results)} results in "
        f"`{cfg.finetune.out_dir}`, {here} of them made in {where}, {len(runs) - here} reused unchanged from "
        f"elsewhere; {len(everything) - len(runs)} other finished runs in the store (other settings, "
        "experiments or reruns) are not used"
    )


def not_run_by(cfg: Config, run: str) -> str | None:
    """Why this profile does not run `run` (grid.include), or None when it does."""
    if any(fnmatch.fnmatchcase(run, pattern) for pattern in cfg.grid.include):
        return None
    return f"not run by profile {cfg.profile}: outside its grid.include"


def trunk_line(cfg: Config) -> str | None:
    """What the detectors' trunk is, from the backbone stage's metrics: a supervised trunk is Table 1's
    "Sup." setting, not the SwAV trunk the other rows name, and the report must say so."""
    path = Path(cfg.backbone.out_dir) / "metrics.json"
    if not path.exists():
        return None
    m = json.loads(path.read_text())
    if not m.get("trained"):
        return f"Trunk: {m.get('backbone')}, weights from `model.backbone_checkpoint` (not trained here)."
    method = {"supervised": 'supervised (Table 1\'s "Sup." setting, not SwAV)', "swav": "SwAV"}.get(
        m.get("method", "swav"), m.get("method")
    )
    return (
        f"Trunk: the small ResNet trained {method} on the ImageNet-like images by the backbone stage; "
        f"{m['knn_k']}-NN probe {m['knn_acc']:.2f} on {m['knn_held_out_images']} held-out images of "
        f"{m['knn_classes']} classes (random init {m['knn_acc_random_init']:.2f})."
    )


def index_md(
    cfg: Config,
    tracking_uri: str,
    runs: pd.DataFrame,
    tables: dict[str, TableData],
    found: list[Claim],
    missing: dict[str, list[str]],
    out: Path = Path("reports"),
    selection: str = "",
) -> str:
    lines = [
        "# Siamese DETR: the paper's tables and figures, rebuilt from our runs",
        "",
        f"{scale_caption(cfg)} {len(runs)} finished fine-tuning runs read from `{redact(tracking_uri)}`; the run "
        "ids behind every cell are in `runs.json` and in the CSV tables.",
        "",
    ]
    if selection:
        lines += [f"Runs used: {selection}.", ""]
    if cfg.grid.note:
        lines += [f"> {cfg.grid.note.strip()}", ""]
    trunk = trunk_line(cfg)
    if trunk:
        lines += [trunk, ""]
    lines += [
        "## What holds at this scale",
        "",
        "A claim holds when the mean per-seed difference has the paper's sign; it is beyond noise when the "
        "95 % confidence interval of that mean (Student's t over the seeds both rows ran) excludes zero.",
        "",
        "| Claim | Where | Holds? | Beyond noise? | Numbers |",
        "|---|---|---|---|---|",
    ]
    verdict = {True: "yes", False: "no"}
    noise = {True: "yes", False: "no", None: "—"}
    judged = [c for c in found if c[2] is not None]
    lines += [f"| {c} | {where} | {verdict[ok]} | {noise[sig]} | {nums} |" for c, where, ok, sig, nums in judged]
    lines.append("")
    unjudged = [f"{text} ({where})" for text, where, holds, _, _ in found if holds is None]
    if unjudged:
        lines += [
            f"Not judged, for lack of runs (outside the profile's grid.include, or listed under Missing runs "
            f"below): {'; '.join(unjudged)}.",
            "",
        ]
    for name, t in tables.items():
        lines += [f"## {_title(t.table)}", "", to_markdown(t)]
        lines += [f"Also as [CSV](tables/{name}.csv) and [LaTeX](tables/{name}.tex).", ""]
    lines += [
        "## Figure 4",
        "",
        "![Figure 4](figures/figure4.png)",
        "",
        "## Figure 6",
        "",
        "![Figure 6](figures/figure6.png)",
        "",
    ]
    lines += sweeps_section(out)
    if missing:
        lines += ["## Missing runs", ""]
        lines += [f"- {name}: {', '.join(items)}" for name, items in missing.items()]
        lines.append("")
    return "\n".join(lines)


def _title(t: PaperTable) -> str:
    return t.title.split(". ", 1)[0]


def sweeps_section(out: Path) -> list[str]:
    """Links to the sweeps written so far (`siamdetr sweep` writes OUT/sweeps/<study>/; not a DVC input of
    this stage, so the list is as of this report)."""
    studies = sorted(p.parent.name for p in (out / "sweeps").glob("*/best.yaml"))
    if not studies:
        return []
    lines = ["## Sweeps", ""]
    for study in studies:
        best = yaml.safe_load((out / "sweeps" / study / "best.yaml").read_text()) or {}
        lines.append(f"- [{study}](sweeps/{study}/index.md): {best.get('verdict', 'no verdict yet')}")
    return [*lines, ""]
