"""Which install extra provides a module, for commands run without it.

The base install is the SDK and its command-line client; the services, the
operator and the load tool come with extras (pyproject.toml). A command whose
lazy import fails on one of these modules says which extra to install instead
of ending in a traceback.
"""

from __future__ import annotations

EXTRA_OF_MODULE = {
    "fastapi": "server",
    "starlette": "server",
    "uvicorn": "server",
    "prometheus_client": "server",
    "rich": "server",
    "kopf": "operator",
    "aiohttp": "operator",
    "matplotlib": "bench",
}
"""Top-level import name -> the extra that installs it (the first extra, where several do)."""


def missing_extra(exc: ModuleNotFoundError, command: str | None) -> str | None:
    """What to tell a user whose command failed to import ``exc.name``; None when the
    module is not one an extra provides (then the error is a real bug, shown as is)."""
    top = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    if extra is None:
        return None
    if command == "operator":
        extra = "operator"
    elif command in ("bench", "soak"):
        extra = "bench"
    what = f"`webrtc-broker {command}`" if command else "this command"
    return (
        f"{what} needs the '{extra}' extra ({top} is not installed): "
        f"pip install 'webrtc-broker[{extra}]'"
    )
