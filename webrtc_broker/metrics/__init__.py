"""Prometheus metrics shared by every service.

Services count into plain ints on their hot paths and export them with
custom collectors that read those counts at scrape time; this package holds
what they share: a fixed-bucket histogram of plain ints
(:mod:`~webrtc_broker.metrics.histogram`), metric-family builders with the
project's naming rules (:mod:`~webrtc_broker.metrics.families`), a private
registry with process metrics (:mod:`~webrtc_broker.metrics.registry`) and the
``/metrics`` endpoint (:mod:`~webrtc_broker.metrics.http`).
"""

from webrtc_broker.metrics.families import NAMESPACE, counter, gauge, histogram, reason_label
from webrtc_broker.metrics.histogram import FixedHistogram
from webrtc_broker.metrics.http import metrics_app, metrics_endpoint, serve_metrics
from webrtc_broker.metrics.registry import service_registry

__all__ = [
    "NAMESPACE",
    "FixedHistogram",
    "counter",
    "gauge",
    "histogram",
    "metrics_app",
    "metrics_endpoint",
    "reason_label",
    "serve_metrics",
    "service_registry",
]
