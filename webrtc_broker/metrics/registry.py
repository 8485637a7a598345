"""One private registry per service, with process metrics and build info.

The global ``prometheus_client.REGISTRY`` is shared by everything in the
process: two services in one process (tests, embedding) would collide there,
and any library that registers metrics would leak into our endpoint. A service
builds its own registry here and serves exactly that.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

import webrtc_broker
from webrtc_broker.metrics.families import gauge


class BuildInfo:
    """``webrtc_broker_build_info{service, version} 1``, to tell deployments apart."""

    def __init__(self, service: str) -> None:
        self._service = service

    def collect(self) -> Iterable[Metric]:
        yield gauge(
            "",
            "build_info",
            "Always 1; the labels say which service and version answered the scrape.",
            [((self._service, webrtc_broker.__version__), 1)],
            ("service", "version"),
        )


def service_registry(service: str, *collectors: Collector) -> CollectorRegistry:
    """A registry with ``collectors``, build info and the standard process metrics.

    Process, Python platform and GC metrics keep their standard names
    (``process_*``, ``python_*``) so that existing dashboards and alerts apply.
    """
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(BuildInfo(service))
    for collector in collectors:
        registry.register(collector)
    return registry
