"""Counters and histograms for the hot path of one event loop.

prometheus_client's metrics are thread-safe: each increment takes a lock and goes through a
labelled child's methods. The HTTP edge counts every request — refusals included, which is what a
flood is made of — from the event loop's one thread, so these keep plain numbers in a dict keyed
by label values, and are read when Prometheus scrapes (from the same thread: the metrics port is
served by the same loop). The exposition is the same as prometheus_client's, without the
`_created` series; so are the checks (label count, no negative increments)."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

_le: Callable[[float], str] = floatToGoString  # a bound as prometheus_client writes it (1e+06, +Inf)


class LoopCounter(Collector):
    """A labelled counter: `inc(*label_values, amount=1)`; the series in `zeros` are exported
    from the start, at 0."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        zeros: Iterable[tuple[str, ...]] = (),
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._name, self._documentation, self._labelnames = name, documentation, list(labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        for labels in zeros:
            self.inc(*labels, amount=0)
        registry.register(self)

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        if len(labels) != len(self._labelnames) or amount < 0:
            raise ValueError(f"{self._name}: {len(self._labelnames)} label values and amount >= 0 expected")
        self._values[labels] = self._values.get(labels, 0.0) + amount

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, value in list(self._values.items()):
            family.add_metric(list(labels), value)
        yield family


class LoopHistogram(Collector):
    """A labelled histogram: `observe(value, *label_values)`; `le` buckets as prometheus_client's."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._name, self._documentation, self._labelnames = name, documentation, list(labelnames)
        self._bounds = sorted(float(b) for b in buckets if not math.isinf(b))  # +Inf is always there
        # Per label values: a count per bucket (the last one +Inf), then the sum.
        self._series: dict[tuple[str, ...], list[float]] = {}
        if not self._labelnames:  # exported from the start, as prometheus_client's
            self._series[()] = [0.0] * (len(self._bounds) + 2)
        registry.register(self)

    def observe(self, value: float, *labels: str) -> None:
        series = self._series.get(labels)
        if series is None:
            if len(labels) != len(self._labelnames):
                raise ValueError(f"{self._name}: {len(self._labelnames)} label values expected")
            series = self._series[labels] = [0.0] * (len(self._bounds) + 2)
        if value == value:  # NaN, as prometheus_client's, goes into the sum and no bucket
            series[bisect_left(self._bounds, value)] += 1  # the first bound >= value: `le`
        series[-1] += value

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, series in list(self._series.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip([*self._bounds, math.inf], series[:-1], strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            family.add_metric(list(labels), buckets, series[-1])
        yield family
