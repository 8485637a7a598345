"""Metric families built at scrape time, with the project's naming rules.

Every metric is ``webrtc_broker_<service>_<name>``, counters end in
``_total``, and label values come from small fixed sets. The builders take
the service's plain counts (ints, dicts, :class:`FixedHistogram`) and return
``prometheus_client`` families; nothing here is touched on a hot path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from webrtc_broker.metrics.histogram import FixedHistogram

NAMESPACE = "webrtc_broker"

MAX_LABEL_VALUES = 64
"""Distinct values one label may take in one metric; the rest are summed as ``other``.

Keys of the services' counters are fixed strings in the code, so this is a
guard against a future change that lets peer-controlled text into a key, not
something that should ever trigger.
"""

OTHER = "other"

Samples = Iterable[tuple[tuple[str, ...], float]]
"""``(label values in the family's label order, value)`` pairs, e.g. ``dict.items()``."""

_NOT_LABEL_CHARS = re.compile(r"[^a-z0-9]+")


def reason_label(text: str) -> str:
    """A free-text reason as a label value: ``"slow peer: 4096 queued"`` -> ``slow_peer``.

    Only the part before the first ``:`` is kept: the services put the
    variable detail (exception text, sizes) after it.
    """
    head = text.split(":", 1)[0].strip().lower()
    return _NOT_LABEL_CHARS.sub("_", head).strip("_") or "unknown"


def _items(samples: Samples) -> list[tuple[tuple[str, ...], float]]:
    merged: dict[tuple[str, ...], float] = {}
    for labels, value in samples:
        merged[labels] = merged.get(labels, 0) + value
    return _capped(merged)


def _capped(merged: dict[tuple[str, ...], float]) -> list[tuple[tuple[str, ...], float]]:
    """Keep the first ``MAX_LABEL_VALUES`` label sets, sum the rest into ``other``.

    Keys are kept in insertion order and never removed from the services'
    counters, so the set kept is stable and ``other`` only grows: a counter
    stays monotonic.
    """
    if len(merged) <= MAX_LABEL_VALUES:
        return list(merged.items())
    kept = list(merged.items())[: MAX_LABEL_VALUES - 1]
    rest = sum(value for _, value in list(merged.items())[MAX_LABEL_VALUES - 1 :])
    width = len(kept[0][0])
    return [*kept, ((OTHER,) * width, rest)]


def _name(service: str, name: str) -> str:
    return f"{NAMESPACE}_{service}_{name}" if service else f"{NAMESPACE}_{name}"


def counter(
    service: str,
    name: str,
    documentation: str,
    samples: Samples | float,
    labels: Sequence[str] = (),
) -> CounterMetricFamily:
    """A counter family; ``name`` ends in ``_total`` (the exposition keeps it)."""
    if not name.endswith("_total"):
        raise ValueError(f"counter {name!r} must end in _total")
    family = CounterMetricFamily(_name(service, name), documentation, labels=labels)
    _fill(family, samples, labels)
    return family


def gauge(
    service: str,
    name: str,
    documentation: str,
    samples: Samples | float,
    labels: Sequence[str] = (),
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(_name(service, name), documentation, labels=labels)
    _fill(family, samples, labels)
    return family


def _fill(
    family: CounterMetricFamily | GaugeMetricFamily,
    samples: Samples | float,
    labels: Sequence[str],
) -> None:
    if isinstance(samples, int | float):
        if labels:
            raise ValueError("a labelled family needs samples per label set")
        family.add_metric([], samples)
        return
    for values, value in _items(samples):
        if len(values) != len(labels):
            raise ValueError(f"{family.name}: labels {values} do not match {tuple(labels)}")
        family.add_metric(list(values), value)


def histogram(
    service: str,
    name: str,
    documentation: str,
    histograms: Mapping[tuple[str, ...], FixedHistogram],
    labels: Sequence[str] = (),
) -> HistogramMetricFamily:
    """A histogram family from fixed histograms keyed by label values."""
    family = HistogramMetricFamily(_name(service, name), documentation, labels=labels)
    for values, hist in histograms.items():
        buckets = [
            ("+Inf" if math.isinf(bound) else repr(bound), float(count))
            for bound, count in hist.cumulative()
        ]
        family.add_metric(list(values), buckets, hist.sum)
    return family
