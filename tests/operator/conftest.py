"""Fixtures: an emulated API server with the CRD installed, a kubeconfig for it, the operator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.operator.apiserver import ApiServer, Store, running_apiserver
from tests.operator.support import (
    OperatorProcess,
    install_crd,
    operator_process,
    server_url,
    write_kubeconfig,
)


@pytest.fixture
async def apiserver() -> AsyncIterator[ApiServer]:
    """The emulator on 127.0.0.1 with the BrokerCluster CRD installed."""
    store = Store()
    install_crd(store)
    async with running_apiserver(store) as server:
        yield server


@pytest.fixture
def kubeconfig(apiserver: ApiServer, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", server_url(apiserver))


@pytest.fixture
async def operator(
    kubeconfig: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[OperatorProcess]:
    """``webrtc-broker operator`` running against the emulator (resync every 0.5 s)."""
    async with operator_process(kubeconfig, tmp_path) as proc:
        try:
            yield proc
        finally:
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                print(proc.log()[-8000:])
