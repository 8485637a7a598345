"""The JSON payloads of WEBRTC_* frames.

Session descriptions and ICE candidates travel as the UTF-8 JSON that a
browser's ``toJSON()`` produces, so browsers and Python peers interoperate.
"""

from __future__ import annotations

import json
from typing import Any

from aiortc import RTCIceCandidate, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

_DESCRIPTION_TYPES = frozenset({"offer", "answer"})


class SignalingError(ValueError):
    """A WEBRTC_* payload that is not a valid description or candidate."""


def _load(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SignalingError(f"payload is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise SignalingError("payload is not a JSON object")
    return value


def description_to_json(description: RTCSessionDescription) -> bytes:
    return json.dumps({"type": description.type, "sdp": description.sdp}).encode()


def description_from_json(data: bytes, expected_type: str) -> RTCSessionDescription:
    value = _load(data)
    kind, sdp = value.get("type"), value.get("sdp")
    if kind not in _DESCRIPTION_TYPES or kind != expected_type:
        raise SignalingError(f"expected a description of type {expected_type!r}, got {kind!r}")
    if not isinstance(sdp, str):
        raise SignalingError("description has no sdp string")
    return RTCSessionDescription(sdp=sdp, type=kind)


def candidate_from_json(data: bytes) -> RTCIceCandidate | None:
    """Parse a trickled candidate; ``None`` means end-of-candidates (an empty candidate)."""
    value = _load(data)
    line = value.get("candidate")
    if not isinstance(line, str):
        raise SignalingError("candidate payload has no candidate string")
    if not line:
        return None
    mid = value.get("sdpMid")
    index = value.get("sdpMLineIndex")
    try:
        candidate = candidate_from_sdp(line.removeprefix("candidate:"))
    except (ValueError, IndexError) as exc:
        raise SignalingError(f"bad candidate line: {exc}") from exc
    candidate.sdpMid = mid if isinstance(mid, str) else None
    candidate.sdpMLineIndex = index if isinstance(index, int) else None
    if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
        candidate.sdpMLineIndex = 0
    return candidate
