"""The paper's claims, checked against the measured tables: (claim, where, holds?, numbers).

A claim holds when the measured means order as the paper says; the numbers say whether the gap is larger
than the seed spread, so a reader can tell a real effect from noise.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from siamdetr.report.runs import IOU_POINTS, summary
from siamdetr.report.tables import TableData

Claim = tuple[str, str, bool | None, str]


def _ap(t: TableData, method: str, group: str, metric: str = "AP") -> tuple[float, float] | None:
    for r, (_, cells, _) in zip(t.table.rows, t.rows, strict=True):
        if r.group == group and r.labels.get("method") == method and cells[metric].mean is not None:
            return cells[metric].mean, cells[metric].std or 0.0
    return None


def _versus(
    a: tuple[float, float] | None, b: tuple[float, float] | None, names: tuple[str, str]
) -> tuple[bool | None, str]:
    if a is None or b is None:
        return None, "—"
    gap = a[0] - b[0]
    noise = "tie" if gap == 0 else "beyond seed spread" if abs(gap) > max(a[1], b[1]) else "within seed spread"
    return gap > 0, f"{names[0]} {a[0]:.3f}±{a[1]:.3f} vs {names[1]} {b[0]:.3f}±{b[1]:.3f} ({noise})"


def best_in_groups(t: TableData, where: str) -> list[Claim]:
    out = []
    for group in dict.fromkeys(r.group for r in t.table.rows):
        ours = _ap(t, "ours", group)
        others = [(m, _ap(t, m, group)) for m in ("from scratch", "UP-DETR", "DETReg")]
        others = [(m, v) for m, v in others if v is not None]
        if ours is None or not others:
            out.append((f"Siamese DETR has the best AP ({group})", where, None, "—"))
            continue
        best_m, best = max(others, key=lambda mv: mv[1][0])
        ok, nums = _versus(ours, best, ("ours", best_m))
        out.append((f"Siamese DETR has the best AP ({group})", where, ok, nums))
    return out


def claims(tables: Mapping[str, TableData], runs: pd.DataFrame, fig4_runs: Mapping[str, str]) -> list[Claim]:
    found: list[Claim] = []
    found += best_in_groups(tables["table1"], "Table 1")
    found += best_in_groups(tables["table2"], "Table 2")
    t3 = tables["table3"]
    ok, nums = _versus(_ap(t3, "ours (e)", "ablation"), _ap(t3, "UP-DETR", "ablation"), ("(e)", "UP-DETR"))
    found.append(("Both pretext tasks (e) beat UP-DETR", "Table 3", ok, nums))
    ok, nums = _versus(_ap(t3, "ours (a)", "ablation"), _ap(t3, "UP-DETR", "ablation"), ("(a)", "UP-DETR"))
    found.append(("Multi-view detection alone (a) beats single-view UP-DETR", "Table 3", ok, nums))
    ok, nums = _versus(_ap(t3, "ours (d)", "ablation"), _ap(t3, "ours (c)", "ablation"), ("(d) R-C", "(c) R-O"))
    found.append(("Crop-level region features (d) beat object-level ones (c)", "Table 3", ok, nums))
    t4 = tables["table4"]
    ok, nums = _versus(
        _ap4(t4, "ours", "COCO→VOC", "Random"), _ap4(t4, "UP-DETR", "COCO→VOC", "Random"), ("ours", "UP-DETR")
    )
    found.append(("With random proposals Siamese DETR beats UP-DETR (COCO→VOC)", "Table 4", ok, nums))
    ok, nums = _versus(
        _ap4(t4, "ours", "COCO→VOC", "Edgeboxes"), _ap4(t4, "ours", "COCO→VOC", "Random"), ("EdgeBoxes", "random")
    )
    found.append(("EdgeBoxes beat random proposals for Siamese DETR (COCO→VOC)", "Table 4", ok, nums))
    found.append(_figure4_claim(runs, fig4_runs))
    return found


def _ap4(t: TableData, method: str, dataset: str, proposals: str) -> tuple[float, float] | None:
    for r, (_, cells, _) in zip(t.table.rows, t.rows, strict=True):
        labels = r.labels
        if (labels.get("method"), labels.get("dataset"), labels.get("proposals")) == (method, dataset, proposals):
            c = cells["AP"]
            return None if c.mean is None else (c.mean, c.std or 0.0)
    return None


def _figure4_claim(runs: pd.DataFrame, fig4_runs: Mapping[str, str]) -> Claim:
    """The paper: Siamese DETR's lead over UP-DETR grows at strict IoU thresholds (≥ 0.7)."""
    text = "Siamese DETR's lead over UP-DETR is larger at IoU ≥ 0.7 than at 0.5"
    lead = {}
    for t in IOU_POINTS:
        a = summary(runs, fig4_runs["ours"], f"AP_iou{t}")
        b = summary(runs, fig4_runs["UP-DETR"], f"AP_iou{t}")
        if a is None or b is None:
            return text, "Figure 4", None, "—"
        lead[t] = a[0] - b[0]
    strict = sum(lead[t] for t in IOU_POINTS if t >= 70) / len([t for t in IOU_POINTS if t >= 70])
    return text, "Figure 4", strict > lead[50], f"lead at 0.5: {lead[50]:+.2f}; mean lead at 0.7-0.95: {strict:+.2f}"
