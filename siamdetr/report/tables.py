"""Tables 1-4: per cell the paper's value, the measured mean ± std over seeds (n), and the difference.

One `TableData` feeds three renderers (Markdown, CSV, LaTeX booktabs), so the formats never disagree.
The best value of each group of rows is bold, for the paper's column and for ours, as the paper does.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from siamdetr.report.paper import PaperTable
from siamdetr.report.runs import summary

LABEL_NAMES = {
    "method": "Method",
    "backbone": "Backbone",
    "variant": "DETR",
    "pretrain_dataset": "Pretrain",
    "dataset": "Dataset",
    "queries": "#query",
    "epochs": "#epoch",
    "region_detection": "Region det.",
    "semantic": "Semantic disc.",
    "proposals": "Proposals",
}


@dataclass
class Cell:
    paper: float
    mean: float | None = None
    std: float | None = None
    n: int = 0
    bold_paper: bool = False
    bold_ours: bool = False

    @property
    def diff(self) -> float | None:
        return None if self.mean is None else self.mean - self.paper


@dataclass
class TableData:
    table: PaperTable
    caption: str
    labels: list[str]
    rows: list[tuple[dict[str, str], dict[str, Cell], list[str]]]  # labels, cells by metric, run ids
    missing: list[str] = field(default_factory=list)  # "run (why)" of the rows without measurements

    @property
    def run_ids(self) -> list[str]:
        return sorted({rid for _, _, ids in self.rows for rid in ids})


def build_table(
    table: PaperTable, runs: pd.DataFrame, caption: str, not_run: Callable[[str], str | None] = lambda run: None
) -> TableData:
    """`not_run(run)` says why the profile does not run a row's run (None: it does)."""
    labels = [k for k in LABEL_NAMES if any(k in r.labels for r in table.rows)]
    rows, missing = [], []
    for r in table.rows:
        cells = {}
        for m in table.metrics:
            s = summary(runs, r.run, m) if r.run else None
            cells[m] = Cell(r.values[m], *(s or (None, None, 0)))
        ids = [] if not r.run or runs.empty else list(runs.loc[runs["run_key"] == r.run, "run_id"])
        if r.run is None:
            missing.append(f"{r.labels.get('method', '?')} ({r.why or 'not in the grid'})")
        elif not ids:
            missing.append(f"{r.run} ({not_run(r.run) or 'no finished MLflow run'})")
        rows.append((r.labels, cells, ids))
    _mark_best(table, rows)
    return TableData(table, caption, labels, rows, missing)


def _mark_best(table: PaperTable, rows: list) -> None:
    for group in dict.fromkeys(r.group for r in table.rows):
        members = [cells for r, (_, cells, _) in zip(table.rows, rows, strict=True) if r.group == group]
        if len(members) < 2:
            continue
        for m in table.metrics:
            best_paper = max(c[m].paper for c in members)
            measured = [c[m].mean for c in members if c[m].mean is not None]
            best_ours = max(measured) if measured else None
            for c in members:
                c[m].bold_paper = c[m].paper == best_paper
                c[m].bold_ours = best_ours is not None and c[m].mean == best_ours


def _fmt(x: float | None, digits: int = 1, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _digits(x: float) -> int:
    """One decimal as the paper prints; two below 1 AP, where a small scale's numbers live."""
    return 1 if abs(x) >= 1 else 2


def _header(t: TableData) -> list[str]:
    cols = [LABEL_NAMES[k] for k in t.labels]
    for m in t.table.metrics:
        cols += [f"{m} paper", f"{m} ours", f"{m} Δ"]
    return cols


def _cells(t: TableData, bold: tuple[str, str]) -> list[list[str]]:
    lo, hi = bold
    out = []
    for labels, cells, _ in t.rows:
        row = [labels.get(k, "") for k in t.labels]
        for m in t.table.metrics:
            c = cells[m]
            paper = _fmt(c.paper)
            d = 0 if c.mean is None else _digits(c.mean)
            ours = "—" if c.mean is None else f"{c.mean:.{d}f} ± {c.std:.{d}f} (n={c.n})"
            row += [
                f"{lo}{paper}{hi}" if c.bold_paper else paper,
                f"{lo}{ours}{hi}" if c.bold_ours else ours,
                _fmt(c.diff, sign=True),
            ]
        out.append(row)
    return out


def to_markdown(t: TableData) -> str:
    header = _header(t)
    lines = [f"**{t.table.title}** — {t.caption}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in _cells(t, ("**", "**"))]
    if t.missing:
        lines += ["", "Missing: " + "; ".join(t.missing)]
    return "\n".join(lines) + "\n"


def to_csv(t: TableData) -> str:
    records = []
    for labels, cells, ids in t.rows:
        rec: dict[str, object] = {LABEL_NAMES[k]: labels.get(k, "") for k in t.labels}
        for m, c in cells.items():
            rec |= {f"{m}_paper": c.paper, f"{m}_mean": c.mean, f"{m}_std": c.std, f"{m}_n": c.n, f"{m}_diff": c.diff}
        rec["run_ids"] = " ".join(ids)
        records.append(rec)
    buf = io.StringIO()
    pd.DataFrame(records).to_csv(buf, index=False)
    return buf.getvalue()


def to_latex(t: TableData) -> str:
    header = [_tex(h) for h in _header(t)]
    body = [[_tex(c) for c in row] for row in _cells(t, ("\x00", "\x01"))]
    body = [[c.replace("\x00", r"\textbf{").replace("\x01", "}") for c in row] for row in body]
    spec = "l" * len(t.labels) + "rrr" * len(t.table.metrics)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{_tex(t.table.title)}. {_tex(t.caption)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
        *[" & ".join(row) + r" \\" for row in body],
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "_": r"\_",
    "#": r"\#",
    "`": "",
    "±": r"$\pm$",
    "×": r"$\times$",
    "Δ": r"$\Delta$",
    "→": r"$\rightarrow$",
    "—": "--",
    "−": "$-$",
}


def _tex(s: str) -> str:
    """Plain text as LaTeX (special characters escaped, the symbols we print as math)."""
    return "".join(TEX.get(ch, ch) for ch in s)
