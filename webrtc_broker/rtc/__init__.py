"""WebRTC sessions with the broker's two data channels, shared by servers and clients."""

from webrtc_broker.rtc.session import Session, SessionClosed
from webrtc_broker.rtc.signaling import SignalingError
from webrtc_broker.rtc.writer import ChannelWriter, FlushScheduler, QueueOverflow

__all__ = [
    "ChannelWriter",
    "FlushScheduler",
    "QueueOverflow",
    "Session",
    "SessionClosed",
    "SignalingError",
]
