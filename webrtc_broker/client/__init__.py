"""Python client SDK: connect through a coordinator, subscribe, publish, receive.

It mirrors the browser SDK (sdk/js); docs/sdks.md sets their APIs side by side.
"""

from webrtc_broker.client.client import (
    CLIENT_CAPABILITIES,
    MAX_FRAME_BYTES,
    BrokerClient,
    ClientEvent,
    Keepalive,
    ReceivedMessage,
    Reconnect,
    coordinator_order,
)
from webrtc_broker.client.errors import (
    AuthenticationError,
    BrokerError,
    ClosedError,
    ConnectTimeoutError,
    CoordinatorUnavailableError,
    DisconnectedError,
    MessageTooLargeError,
    NoServerAvailableError,
    PingTimeoutError,
    ServerFullError,
)
from webrtc_broker.client.link import IceTransportPolicy, SignallingDrop
from webrtc_broker.wire.broker_pb2 import Capability, Role

__all__ = [
    "CLIENT_CAPABILITIES",
    "MAX_FRAME_BYTES",
    "AuthenticationError",
    "BrokerClient",
    "BrokerError",
    "Capability",
    "ClientEvent",
    "ClosedError",
    "ConnectTimeoutError",
    "CoordinatorUnavailableError",
    "DisconnectedError",
    "IceTransportPolicy",
    "Keepalive",
    "MessageTooLargeError",
    "NoServerAvailableError",
    "PingTimeoutError",
    "ReceivedMessage",
    "Reconnect",
    "Role",
    "ServerFullError",
    "SignallingDrop",
    "coordinator_order",
]
