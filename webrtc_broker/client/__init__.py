"""Python client SDK: connect through a coordinator, subscribe, publish, receive."""

from webrtc_broker.client.client import BrokerClient, ReceivedMessage
from webrtc_broker.client.errors import (
    AuthenticationError,
    BrokerError,
    ClosedError,
    ConnectTimeoutError,
    MessageTooLargeError,
    NoServerAvailableError,
    ServerFullError,
)

__all__ = [
    "AuthenticationError",
    "BrokerClient",
    "BrokerError",
    "ClosedError",
    "ConnectTimeoutError",
    "MessageTooLargeError",
    "NoServerAvailableError",
    "ReceivedMessage",
    "ServerFullError",
]
