"""The paper's claims, checked against the measured tables: (claim, where, holds?, beyond noise?, numbers).

A claim compares two rows run with the same seeds. It holds when the mean of the per-seed differences has
the paper's sign; it is beyond seed noise when the 95 % confidence interval of that mean (Student's t over
the paired seeds) excludes zero. Pairing removes what a seed does to both rows alike (data order,
initialisation), so the interval is much tighter than the rows' own spreads suggest when the rows move
together.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from siamdetr.report.runs import IOU_POINTS, summary
from siamdetr.report.tables import TableData

Claim = tuple[str, str, bool | None, bool | None, str]
CONFIDENCE = 0.95
CURVE = "AP_curve"  # a run's mean AP over its evaluated fine-tuning epochs: the area under its Figure 6 curve


@dataclass(frozen=True)
class Paired:
    """Per-seed differences a − b of one metric over the seeds both runs finished."""

    mean: float
    low: float | None  # the 95 % t-interval of the mean; None with one seed
    high: float | None
    n: int

    @property
    def beyond_noise(self) -> bool | None:
        return None if self.low is None else self.low > 0 or self.high < 0


def per_seed(runs: pd.DataFrame, run_key: str, metric: str) -> dict[int, float]:
    if runs.empty or metric not in runs:
        return {}
    rows = runs.loc[runs["run_key"] == run_key, ["seed", metric]].dropna()
    return {int(seed): float(v) for seed, v in zip(rows["seed"], rows[metric], strict=True)}


def paired(runs: pd.DataFrame, run_a: str, run_b: str, metric: str = "AP") -> Paired | None:
    """Mean and 95 % confidence interval of a − b over the seeds both runs have; None if they share none."""
    a, b = per_seed(runs, run_a, metric), per_seed(runs, run_b, metric)
    diffs = [a[s] - b[s] for s in sorted(a.keys() & b.keys())]
    if not diffs:
        return None
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return Paired(mean, None, None, 1)
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(diffs) - 1)) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return Paired(mean, mean - half, mean + half, len(diffs))


def _run_of(t: TableData, method: str, group: str) -> str | None:
    for r, (_, cells, _) in zip(t.table.rows, t.rows, strict=True):
        if r.group == group and r.labels.get("method") == method and cells["AP"].mean is not None:
            return r.run
    return None


def versus(
    runs: pd.DataFrame,
    run_a: str | None,
    run_b: str | None,
    names: tuple[str, str],
    metric: str = "AP",
    unit: str = "AP",
) -> tuple:
    """(holds, beyond noise, numbers) of "a beats b" on `metric` (AP by default)."""
    p = None if run_a is None or run_b is None else paired(runs, run_a, run_b, metric)
    if p is None:
        return None, None, "—"
    sa, sb = summary(runs, run_a, metric), summary(runs, run_b, metric)
    interval = "" if p.low is None else f" [95% CI {p.low:+.2f}, {p.high:+.2f}]"
    text = (
        f"{names[0]} − {names[1]} = {p.mean:+.2f} {unit}{interval} over {p.n} paired seed{'s' * (p.n > 1)} "
        f"({names[0]} {sa[0]:.2f}±{sa[1]:.2f}, {names[1]} {sb[0]:.2f}±{sb[1]:.2f})"
    )
    return p.mean > 0, p.beyond_noise, text


PRETRAINING = ("UP-DETR", "DETReg", "ours")


def _groups(t: TableData) -> list[str]:
    """The table's row groups, in their order."""
    return list(dict.fromkeys(r.group for r in t.table.rows))


def best_in_groups(t: TableData, runs: pd.DataFrame, where: str) -> list[Claim]:
    """Per group of rows: each pretraining beats training from scratch, and Siamese DETR beats the best
    other method."""
    out: list[Claim] = []
    for group in _groups(t):
        scratch = _run_of(t, "from scratch", group)
        for method in PRETRAINING:
            if any(r.group == group and r.labels.get("method") == method for r in t.table.rows):
                name = "Siamese DETR" if method == "ours" else method
                result = versus(runs, _run_of(t, method, group), scratch, (method, "scratch"))
                out.append((f"{name} pretraining beats training from scratch ({group})", where, *result))
        ours = _run_of(t, "ours", group)
        others = [(m, _run_of(t, m, group)) for m in ("from scratch", "UP-DETR", "DETReg")]
        others = [(m, r) for m, r in others if r is not None and summary(runs, r, "AP") is not None]
        text = f"Siamese DETR has the best AP ({group})"
        if ours is None or not others:
            out.append((text, where, None, None, "—"))
            continue
        best_m, best = max(others, key=lambda mr: summary(runs, mr[1], "AP")[0])
        out.append((text, where, *versus(runs, ours, best, ("ours", best_m))))
    return out


def claims(tables: Mapping[str, TableData], runs: pd.DataFrame, fig4_runs: Mapping[str, str]) -> list[Claim]:
    found: list[Claim] = []
    found += best_in_groups(tables["table1"], runs, "Table 1")
    found += best_in_groups(tables["table2"], runs, "Table 2")
    t3 = tables["table3"]

    def t3_run(method: str) -> str | None:
        return _run_of(t3, method, "ablation")

    pairs = (
        ("Both pretext tasks (e) beat UP-DETR", "ours (e)", "UP-DETR", ("(e)", "UP-DETR")),
        ("Multi-view detection alone (a) beats single-view UP-DETR", "ours (a)", "UP-DETR", ("(a)", "UP-DETR")),
        ("Crop-level region features (d) beat object-level ones (c)", "ours (d)", "ours (c)", ("(d) R-C", "(c) R-O")),
    )
    for text, a, b, names in pairs:
        found.append((text, "Table 3", *versus(runs, t3_run(a), t3_run(b), names)))
    t4 = tables["table4"]
    found.append(
        (
            "With random proposals Siamese DETR beats UP-DETR (COCO→VOC)",
            "Table 4",
            *versus(
                runs,
                _run4(t4, "ours", "COCO→VOC", "Random"),
                _run4(t4, "UP-DETR", "COCO→VOC", "Random"),
                ("ours", "UP-DETR"),
            ),
        )
    )
    found.append(
        (
            "EdgeBoxes beat random proposals for Siamese DETR (COCO→VOC)",
            "Table 4",
            *versus(
                runs,
                _run4(t4, "ours", "COCO→VOC", "Edgeboxes"),
                _run4(t4, "ours", "COCO→VOC", "Random"),
                ("EdgeBoxes", "random"),
            ),
        )
    )
    found.append(_figure4_claim(runs, fig4_runs))
    found += convergence(tables, runs)
    return found


def convergence(tables: Mapping[str, TableData], runs: pd.DataFrame) -> list[Claim]:
    """Figure 6: Siamese DETR fine-tunes faster than training from scratch, in each ImageNet-pretrained group
    of Tables 1-2. Compared on each run's mean AP over its evaluated epochs (the area under its curve),
    paired by seed, so that no single epoch is picked for the reading."""
    out: list[Claim] = []
    for name, dataset in (("table1", "COCO"), ("table2", "VOC")):
        t = tables[name]
        for group in _groups(t):
            methods = {r.labels.get("method") for r in t.table.rows if r.group == group}
            if "COCO-pretrained" in group or not {"ours", "from scratch"} <= methods:
                continue
            result = versus(
                runs,
                _run_of(t, "ours", group),
                _run_of(t, "from scratch", group),
                ("ours", "scratch"),
                CURVE,
                "mean AP over the fine-tuning curve",
            )
            out.append(
                (f"Siamese DETR converges faster than training from scratch ({dataset}, {group})", "Figure 6", *result)
            )
    return out


def _run4(t: TableData, method: str, dataset: str, proposals: str) -> str | None:
    for r in t.table.rows:
        labels = r.labels
        if (labels.get("method"), labels.get("dataset"), labels.get("proposals")) == (method, dataset, proposals):
            return r.run
    return None


def _figure4_claim(runs: pd.DataFrame, fig4_runs: Mapping[str, str]) -> Claim:
    """The paper: Siamese DETR's lead over UP-DETR grows at strict IoU thresholds (≥ 0.7)."""
    text = "Siamese DETR's lead over UP-DETR is larger at IoU ≥ 0.7 than at 0.5"
    lead = {}
    for t in IOU_POINTS:
        a = summary(runs, fig4_runs["ours"], f"AP_iou{t}")
        b = summary(runs, fig4_runs["UP-DETR"], f"AP_iou{t}")
        if a is None or b is None:
            return text, "Figure 4", None, None, "—"
        lead[t] = a[0] - b[0]
    strict = sum(lead[t] for t in IOU_POINTS if t >= 70) / len([t for t in IOU_POINTS if t >= 70])
    numbers = f"lead at 0.5: {lead[50]:+.2f}; mean lead at 0.7-0.95: {strict:+.2f}"
    return text, "Figure 4", strict > lead[50], None, numbers
