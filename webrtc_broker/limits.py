"""Protocol limits and client defaults shared by the Python SDK, the browser SDK and the servers.

This module is their one source. Python code imports it; the browser SDK's build
(``sdk/js/scripts/steps.mjs``) generates ``sdk/js/src/gen/limits.ts`` from it, so a
change here changes the committed browser bundle, and ``make sdk-check`` fails until
that is rebuilt. Every name in ``__all__`` goes to TypeScript: an ``int`` under its
own name, a ``float`` (a duration, in seconds here) as ``<NAME>_MS`` in whole
milliseconds, each with its docstring as the comment. The module imports nothing, so
the build can run it on its own.
"""

__all__ = [
    "BATCH_ENTRY_OVERHEAD",
    "BATCH_MAX_BYTES",
    "CONNECT_TIMEOUT",
    "ICE_SERVERS_TIMEOUT",
    "KEEPALIVE_INTERVAL",
    "KEEPALIVE_TIMEOUT",
    "MAX_CANDIDATES",
    "MAX_CANDIDATE_BYTES",
    "MAX_FRAME_BYTES",
    "PING_TIMEOUT",
    "RECONNECT_ATTEMPT_TIMEOUT",
    "RECONNECT_FIRST_DELAY",
    "RECONNECT_MAX_DELAY",
    "REFUSAL_GRACE",
]

# -- frames ----------------------------------------------------------------

MAX_FRAME_BYTES = 255 * 1024
"""Largest frame a client may send, encoded: what the SDKs refuse with
MessageTooLargeError and what a comm server takes by default (``max_frame_bytes``).
Data channels carry 256 KiB messages; the relay adds the sender's alias and the
topic to what it forwards."""

BATCH_MAX_BYTES = 1160
"""Largest BATCH message: the user data of one SCTP packet (one DATA chunk) as aiortc
sends it. Peers that announced CAPABILITY_BATCH get their small frames packed into
messages of at most this size."""

BATCH_ENTRY_OVERHEAD = 4
"""Bytes counted for each frame in a batch besides the frame itself: its field tag (1),
its length (at most 2, as a batched frame is under 16 KiB), and 1 toward the BATCH
message's own 2-byte header, which a batch (two frames or more) thus pays for. A
batch is full when the next frame's length plus this would take it past
BATCH_MAX_BYTES; a frame that alone would goes out as itself. Counted so, a batch
never exceeds BATCH_MAX_BYTES."""

# -- connecting -------------------------------------------------------------

CONNECT_TIMEOUT = 20.0
"""How long a first connect may take (coordinator, WebRTC set-up, AUTH) by default.
Without a chosen server, one that does not answer within half of it is passed over."""

ICE_SERVERS_TIMEOUT = 3.0
"""How long the coordinator's ``/ice-servers`` may take to answer; a session then goes
without ICE servers."""

REFUSAL_GRACE = 1.0
"""How long a set-up waits, after its session closed, for the server's reason to arrive
through the coordinator (a full server, refused credentials)."""

MAX_CANDIDATES = 64
"""Remote ICE candidates one session takes; a server sends a few (aiortc none)."""

MAX_CANDIDATE_BYTES = 1024
"""Largest remote ICE candidate taken, as JSON (a candidate line is one or two hundred
bytes)."""

# -- staying connected ----------------------------------------------------------

PING_TIMEOUT = 10.0
"""How long ``ping`` waits for its echo by default: far above any round trip a live
session has, well below what a caller waiting on a stalled server tolerates."""

KEEPALIVE_INTERVAL = 3.0
"""How long a client hears nothing from its server before it sends a PING (and again
at each tick of silence after that). A comm server probes a quiet client sooner, after
2 s of silence (its ``client_probe_after``), and hearing that probe is enough: an idle
session then costs one probe and its SCTP acknowledgement every few seconds instead of
a PING, its echo and their acknowledgements."""

KEEPALIVE_TIMEOUT = 4.0
"""How long a client hears nothing from its server before it presumes it dead and
reconnects. The keepalive looks every quarter of this (or every ``KEEPALIVE_INTERVAL``,
if shorter), so a dead server is given up 5-6 s after it was last heard."""

RECONNECT_FIRST_DELAY = 0.1
"""The wait before the second round of reconnect attempts (the first is immediate); it
doubles each round, with +-20% jitter."""

RECONNECT_MAX_DELAY = 5.0
"""The longest wait between rounds of reconnect attempts."""

RECONNECT_ATTEMPT_TIMEOUT = 20.0
"""How long one reconnect attempt (coordinator, WebRTC set-up, AUTH) may take."""
