"""Python client SDK: connect through a coordinator, subscribe, publish, receive."""

from webrtc_broker.client.client import BrokerClient, Keepalive, ReceivedMessage, Reconnect
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
from webrtc_broker.client.link import IceTransportPolicy

__all__ = [
    "AuthenticationError",
    "BrokerClient",
    "BrokerError",
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
    "ServerFullError",
]
