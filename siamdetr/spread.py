"""Mean and spread over seeds, one definition for the grid's summaries, the report's cells and bands and the
sweep's re-check: the sample standard deviation (n − 1), 0 for a single seed."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
