"""What the coordinator serves to browsers: the demo page and the SDK from package data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib.resources import files

import httpx
import pytest

from coordinator import create_app
from webrtc_broker.config import CoordinatorConfig

STATIC = files("webrtc_broker") / "static"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(CoordinatorConfig())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://coordinator") as client:
        yield client


async def test_the_sdk_is_served_from_package_data_to_any_origin(http: httpx.AsyncClient) -> None:
    response = await http.get("/sdk/webrtc-broker.js", headers={"Origin": "http://app.example"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["x-typescript-types"] == "/sdk/webrtc-broker.d.ts"
    assert response.headers["cache-control"] == "no-cache"
    assert response.content == (STATIC / "sdk" / "webrtc-broker.js").read_bytes()
    assert b"export {" in response.content  # an ES module

    types = await http.get("/sdk/webrtc-broker.d.ts")
    assert types.status_code == 200
    assert b"export declare class BrokerClient" in types.content
    assert types.headers["access-control-allow-origin"] == "*"


async def test_the_demo_page_and_its_script(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/demo.js">' in page.text
    assert "access-control-allow-origin" not in page.headers
    script = await http.get("/demo.js")
    assert script.status_code == 200
    assert 'from "/sdk/webrtc-broker.js"' in script.text  # the served SDK, not a copy


async def test_only_the_listed_files_are_served(http: httpx.AsyncClient) -> None:
    for path in ("/sdk/", "/sdk/../index.html", "/static/index.html", "/index.html"):
        assert (await http.get(path)).status_code == 404, path
    head = await http.head("/sdk/webrtc-broker.js")
    assert head.status_code == 200
    assert head.content == b""
