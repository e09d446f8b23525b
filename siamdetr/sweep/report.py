"""reports/sweeps/<study>/: best.yaml (with the command that applies it), trials.csv, the figures (Optuna's
own matplotlib plots, and AP against τ) and an index.md that says what the re-check found."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import yaml  # noqa: E402

from siamdetr.grid import load_runs  # noqa: E402
from siamdetr.io import atomic_write_text  # noqa: E402
from siamdetr.report.figures import _save  # noqa: E402

log = logging.getLogger(__name__)

TAU = "pretrain.tau"


def apply_command(plan: Any, values: dict[str, float]) -> str:
    """The `dvc exp run -S …` that puts `values` where the pipeline reads them: the pretraining run's own
    entry of the runs file where it sets the key itself (there it wins over params.yaml), else params.yaml."""
    base = plan.layers.load()
    run = load_runs(base.grid.runs_file)[plan.space.pretrain_run]
    stage_of = f"pretrain_stages.{run.stage}.{run.name}"
    parts = []
    for key, value in values.items():
        target = f"{base.grid.runs_file}:{stage_of}.{key}" if key in run.overrides else key
        parts.append(f"-S '{target}={value:.4g}'")
    return "dvc exp run " + " ".join(parts)


def write(plan: Any, study: optuna.Study, verdict: dict[str, Any], out: Path) -> list[Path]:
    """Every output of one study; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "trials.csv"]
    atomic_write_text(written[0], study.trials_dataframe().to_csv(index=False))
    best_name = verdict.get("best")
    best_values = verdict["candidates"][best_name]["values"] if best_name else None
    best = {
        "study": plan.study,
        "objective": f"fine-tune {plan.space.objective} (COCO, percent), maximised",
        "trials": {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in optuna.trial.TrialState},
        "best_trial": best_name,
        "values": best_values,
        "recheck": {
            name: {"mean": c["mean"], "std": c["std"], "per_seed": c["per_seed"], "values": c["values"]}
            for name, c in verdict["candidates"].items()
        },
        "beats_defaults": verdict.get("beats_defaults"),
        "verdict": verdict["text"],
        "command": apply_command(plan, best_values) if best_values else None,
    }
    written.append(out / "best.yaml")
    atomic_write_text(written[-1], yaml.safe_dump(json.loads(json.dumps(best)), sort_keys=False))
    written += figures(plan, study, verdict, out)
    written.append(out / "index.md")
    atomic_write_text(written[-1], index_md(plan, study, verdict, best, written))
    return written


def figures(plan: Any, study: optuna.Study, verdict: dict[str, Any], out: Path) -> list[Path]:
    """Optimisation history, parameter importances, slices, AP vs τ (each PNG + SVG; those that need more
    complete trials than the study has are left out and said so in the log)."""
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    plots = {"history": ovm.plot_optimization_history, "slices": ovm.plot_slice}
    if len(complete) >= 2:
        plots["importances"] = ovm.plot_param_importances
    written = []
    for name, plot in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as e:
                log.warning("study %s: no %s figure (%s)", plan.study, name, e)
                continue
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            if name == "slices":  # Optuna lays out its panels and colour bar itself
                fig.set_size_inches(max(6.0, 3.6 * len(plan.space.ranges)), 4.5)
                fig.subplots_adjust(bottom=0.2)
            else:
                fig.set_size_inches(6.0, 4.0)
                fig.tight_layout()
        _save(fig, out / name)
        written += [out / f"{name}.png", out / f"{name}.svg"]
    if TAU in plan.space.keys:
        _save(ap_vs_tau(plan, study, verdict), out / "ap_vs_tau")
        written += [out / "ap_vs_tau.png", out / "ap_vs_tau.svg"]
    return written


def ap_vs_tau(plan: Any, study: optuna.Study, verdict: dict[str, Any]) -> plt.Figure:
    """Each trial's search AP against its τ (pruned trials at their last reported AP), and the re-checked
    candidates' mean ± std over seeds."""
    metric = plan.space.objective
    fig, ax = plt.subplots(figsize=(6, 4))
    for state, style in (
        (optuna.trial.TrialState.COMPLETE, {"color": "tab:blue", "label": "trial (1 seed)"}),
        (optuna.trial.TrialState.PRUNED, {"color": "0.6", "marker": "x", "label": "pruned (last report)"}),
    ):
        points = [
            (t.params[TAU], t.value if t.value is not None else t.intermediate_values[max(t.intermediate_values)])
            for t in study.get_trials(deepcopy=False, states=(state,))
            if TAU in t.params and (t.value is not None or t.intermediate_values)
        ]
        if points:
            ax.scatter(*zip(*points, strict=True), **style)
    for name, c in verdict["candidates"].items():
        colour = "tab:red" if name == "defaults" else "tab:green"
        ax.errorbar(
            c["values"][TAU],
            c["mean"],
            yerr=c["std"],
            fmt="D",
            color=colour,
            capsize=3,
            label=f"{name} (re-check, {len(c['per_seed'])} seeds)",
        )
    ax.set_xlabel("view IoU threshold τ")
    ax.set_ylabel(f"fine-tune {metric} (%)")
    ax.set_title(f"study {plan.study}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def index_md(plan: Any, study: optuna.Study, verdict: dict[str, Any], best: dict[str, Any], written: list) -> str:
    metric = plan.space.objective
    keys = plan.space.keys
    lines = [
        f"# Sweep `{plan.study}`",
        "",
        f"Objective: fine-tune {metric} of `{plan.space.finetune_run}` from `{plan.space.pretrain_run}` pretrained "
        f"with each trial's values; search on one seed, re-check on {len(verdict['seeds'])} "
        f"(seeds {verdict['seeds']}). Trials: " + ", ".join(f"{n} {k}" for k, n in best["trials"].items() if n),
        "",
        f"**Verdict:** {verdict['text']}",
        "",
        "| candidate | " + " | ".join(keys) + f" | {metric} mean ± std | per seed |",
        "|---|" + "---|" * len(keys) + "---|---|",
    ]
    for name, c in verdict["candidates"].items():
        vals = " | ".join(f"{c['values'][k]:.4g}" for k in keys)
        seeds = ", ".join(f"{v:.2f}" for v in c["per_seed"].values())
        lines.append(f"| {name} | {vals} | {c['mean']:.2f} ± {c['std']:.2f} | {seeds} |")
    if best["command"]:
        lines += ["", "Apply the best values to the pipeline:", "", f"    {best['command']}"]
    lines += ["", "Files: " + ", ".join(f"[{p.name}]({p.name})" for p in written if p.suffix != ".svg"), ""]
    return "\n".join(lines)
