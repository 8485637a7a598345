"""The browser-facing files the coordinator serves: the demo page and the browser SDK.

They are package data of ``webrtc_broker`` (``webrtc_broker/static``, built
from ``sdk/js`` and committed), so any installation serves them without
Node.js. Only the files listed here are served: there is no directory
listing and no path from the URL ever reaches the filesystem.

The SDK is fetched cross-origin by pages hosted elsewhere (module scripts
are always fetched in CORS mode), so its responses allow any origin; they are
public code, never credentials. Browsers revalidate every time
(``no-cache`` plus the ETag), so a redeployed coordinator serves its new SDK
at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

from fastapi import FastAPI, Response
from fastapi.responses import FileResponse

STATIC = files("webrtc_broker") / "static"

SDK_PATH = "/sdk/webrtc-broker.js"
SDK_TYPES_PATH = "/sdk/webrtc-broker.d.ts"


@dataclass(frozen=True, slots=True)
class StaticFile:
    resource: str
    """Path below ``webrtc_broker/static``."""
    media_type: str
    cross_origin: bool = False
    headers: tuple[tuple[str, str], ...] = ()


ROUTES: dict[str, StaticFile] = {
    "/": StaticFile("index.html", "text/html; charset=utf-8"),
    "/demo.js": StaticFile("demo.js", "text/javascript; charset=utf-8"),
    SDK_PATH: StaticFile(
        "sdk/webrtc-broker.js",
        "text/javascript; charset=utf-8",
        cross_origin=True,
        # Deno (and tools that follow it) find the declarations through this header.
        headers=(("X-TypeScript-Types", SDK_TYPES_PATH),),
    ),
    SDK_TYPES_PATH: StaticFile(
        "sdk/webrtc-broker.d.ts", "application/typescript; charset=utf-8", cross_origin=True
    ),
}


def _resource(name: str) -> Traversable:
    resource = STATIC
    for part in name.split("/"):
        resource = resource / part
    return resource


def add_static_routes(app: FastAPI) -> None:
    """Serve the demo page at ``/`` and the browser SDK under ``/sdk/``."""
    for path, spec in ROUTES.items():
        app.add_api_route(path, _handler(spec), methods=["GET", "HEAD"], include_in_schema=False)


def _handler(spec: StaticFile) -> Callable[[], Awaitable[Response]]:
    resource = _resource(spec.resource)

    async def serve() -> Response:
        headers = {"Cache-Control": "no-cache", **dict(spec.headers)}
        if spec.cross_origin:
            headers["Access-Control-Allow-Origin"] = "*"
        if not resource.is_file():
            return Response("not built: run `make sdk`\n", status_code=404, media_type="text/plain")
        return FileResponse(str(resource), media_type=spec.media_type, headers=headers)

    return serve
