"""`siamdetr compare A B`: two DVC experiments (or two sets of MLflow runs) side by side, run by run.

A side is `exp:NAME` (the runs `dvc exp run` tagged with DVC_EXP_NAME=NAME), `workspace` (runs made
outside `dvc exp`, e.g. `dvc repro`) or any MLflow filter, e.g. "tags.git_commit LIKE 'abc%'".
"""

from __future__ import annotations

import pandas as pd

from siamdetr.config import ConfigError
from siamdetr.report.runs import METRICS, finetune_runs, summary


def selector_filter(side: str) -> str:
    if side.startswith("exp:"):
        return f"tags.dvc_exp_name = '{side[4:]}'"
    if side == "workspace":
        return ""
    return side


def select(tracking_uri: str, side: str) -> pd.DataFrame:
    from mlflow.exceptions import MlflowException

    try:
        runs = finetune_runs(tracking_uri, filter_string=selector_filter(side))
    except MlflowException as e:
        reason = str(e).splitlines()[0][:200]
        raise ConfigError(f"compare: {side!r} is not exp:NAME, workspace or a valid MLflow filter ({reason})") from e
    if side == "workspace" and not runs.empty:
        runs = runs[runs["dvc_exp_name"] == ""]
    return runs


def compare_runs(a: pd.DataFrame, b: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> pd.DataFrame:
    """Per run and metric: mean ± std (n) of each side, B − A, and whether |B − A| exceeds the larger of
    the two seed spreads (std); runs present on one side only are listed with the other side empty."""
    keys = sorted(set(a.get("run_key", [])) | set(b.get("run_key", [])))
    rows = []
    for key in keys:
        for m in metrics:
            sa, sb = summary(a, key, m), summary(b, key, m)
            if sa is None and sb is None:
                continue
            diff = None if sa is None or sb is None else sb[0] - sa[0]
            spread = None if sa is None or sb is None else max(sa[1], sb[1])
            rows.append(
                {
                    "run": key,
                    "metric": m,
                    "A": _fmt(sa),
                    "B": _fmt(sb),
                    "B - A": None if diff is None else round(diff, 3),
                    "beyond seed spread": None if diff is None else bool(abs(diff) > spread and spread is not None),
                }
            )
    return pd.DataFrame(rows, columns=["run", "metric", "A", "B", "B - A", "beyond seed spread"])


def _fmt(s: tuple[float, float, int] | None) -> str:
    return "—" if s is None else f"{s[0]:.2f} ± {s[1]:.2f} (n={s[2]})"


def compare_markdown(side_a: str, side_b: str, table: pd.DataFrame) -> str:
    head = [f"# Comparison: A = `{side_a}`, B = `{side_b}`", ""]
    if table.empty:
        return "\n".join(head + ["No fine-tuning runs matched either side.", ""])
    beyond = int(table["beyond seed spread"].fillna(False).sum())
    head += [
        f"{len(table)} metric rows over {table['run'].nunique()} runs; {beyond} differ by more than the seed spread.",
        "",
    ]
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for rec in table.itertuples(index=False):
        lines.append("| " + " | ".join("—" if v is None or v != v else str(v) for v in rec) + " |")
    return "\n".join(head + lines) + "\n"
