"""From records to figures: medians over runs, and ratios between servers.

Why ratios of *paired* runs: the machines are shared and noisy, and absolute numbers
drift over minutes. Each run measures every server back to back on the same scenario,
so the ratio within a run cancels most of the drift; the figure we quote is the median
of those per-run ratios. Absolute figures are medians over runs, and are for scale only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["Records", "median", "paired_ratio", "percentile", "select"]

Record = dict[str, Any]


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of an ascending, non-empty sequence."""
    if not ordered:
        raise ValueError("no values")
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def median(values: Iterable[Any]) -> float | None:
    """The median of the numbers among ``values`` (``None`` and booleans skipped), or
    ``None`` if there are none."""
    numbers = [v for v in values
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return statistics.median(numbers) if numbers else None


def select(records: Iterable[Record], **match: Any) -> list[Record]:
    """The error-free records whose fields equal ``match`` (a missing field is None)."""
    return [r for r in records if "error" not in r and "skipped" not in r
            and all(r.get(k) == v for k, v in match.items())]


def paired_ratio(records: Sequence[Record], field: str, numerator: dict[str, Any],
                 denominator: dict[str, Any]) -> float | None:
    """The median over runs of ``numerator[field] / denominator[field]``, pairing the
    two records of each run (records matched by the field values given)."""
    tops = {r["run"]: r.get(field) for r in select(records, **numerator)}
    bottoms = {r["run"]: r.get(field) for r in select(records, **denominator)}
    return median(_ratios(tops, bottoms))


def _ratios(tops: dict[int, Any], bottoms: dict[int, Any]) -> list[float]:
    """``tops[run] / bottoms[run]`` for every run both have a number for."""
    ratios = []
    for run in sorted(tops.keys() & bottoms.keys()):
        top, bottom = tops[run], bottoms[run]
        if isinstance(top, (int, float)) and isinstance(bottom, (int, float)) and bottom:
            ratios.append(top / bottom)
    return ratios


class Records:
    """All records of one invocation, with the queries the report needs."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.all = list(records)

    def median(self, field: str, **match: Any) -> float | None:
        return median(r.get(field) for r in select(self.all, **match))

    def count(self, **match: Any) -> int:
        return len(select(self.all, **match))

    def any(self, field: str, **match: Any) -> bool:
        """Whether ``field`` was true in any run (a flag such as ``loadgen_saturated``)."""
        return any(bool(r.get(field)) for r in select(self.all, **match))

    def ratio(self, field: str, scenario: str, clients: int, server: str, reference: str,
              **extra: Any) -> float | None:
        """``server`` over ``reference`` on ``field``, paired by run."""
        return paired_ratio(
            self.all, field,
            {"scenario": scenario, "clients": clients, "server": server} | extra,
            {"scenario": scenario, "clients": clients, "server": reference} | extra)

    def isolation_ratio(self, server: str, field: str = "deliveries_per_s") -> float | None:
        """The others' ``field`` with a stalled client over their ``deliveries_per_s``
        without one, paired by run (``deliveries_per_s_after_close``: once it is gone)."""
        with_stalled = {r["run"]: r.get(field)
                        for r in select(self.all, scenario="isolation", server=server,
                                        stalled=True)}
        without = {r["run"]: r.get("deliveries_per_s")
                   for r in select(self.all, scenario="isolation", server=server,
                                   stalled=False)}
        return median(_ratios(with_stalled, without))

    def errors(self) -> list[Record]:
        return [r for r in self.all if "error" in r]

    def skipped(self) -> list[Record]:
        return [r for r in self.all if "skipped" in r]
