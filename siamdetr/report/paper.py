"""The paper's numbers (paper.yaml), with the grid run that reproduces each row."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

TABLES = ("table1", "table2", "table3", "table4")
LABELS = (
    "method",
    "backbone",
    "variant",
    "pretrain_dataset",
    "dataset",
    "queries",
    "epochs",
    "region_detection",
    "semantic",
    "proposals",
)


@dataclass(frozen=True)
class PaperRow:
    labels: dict[str, str]  # the columns that say what the row is (method, variant, ...)
    group: str
    run: str | None
    why: str | None
    values: dict[str, float]  # metric -> the paper's value


@dataclass(frozen=True)
class PaperTable:
    name: str
    title: str
    metrics: list[str]
    rows: list[PaperRow]


def load_paper() -> dict[str, PaperTable]:
    """Tables 1-4 as the paper prints them."""
    data = yaml.safe_load(resources.files("siamdetr.report").joinpath("paper.yaml").read_text())
    return {name: _table(name, data[name]) for name in TABLES}


def _table(name: str, d: dict[str, Any]) -> PaperTable:
    rows = []
    for r in d["rows"]:
        if len(r["values"]) != len(d["metrics"]):
            raise ValueError(f"paper.yaml: {name} row {r}: {len(r['values'])} values for metrics {d['metrics']}")
        labels = {k: str(r[k]) for k in LABELS if k in r}
        rows.append(
            PaperRow(
                labels, str(r["group"]), r.get("run"), r.get("why"), dict(zip(d["metrics"], r["values"], strict=True))
            )
        )
    return PaperTable(name, d["title"], list(d["metrics"]), rows)
