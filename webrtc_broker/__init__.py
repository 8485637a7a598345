"""webrtc-broker: a pub/sub message broker whose clients talk over WebRTC data channels.

This package holds what every component shares: the wire format, configuration,
authentication, the WebRTC session helpers, the Python client SDK and the CLI.
The services live in the top-level packages ``coordinator``, ``commserver`` and
``broker_operator`` (folder ``operator/``).
"""

__version__ = "0.1.0"
