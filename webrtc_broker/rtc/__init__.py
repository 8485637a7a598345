"""WebRTC sessions with the broker's two data channels, shared by servers and clients."""

from webrtc_broker.rtc.ice import rtc_ice_servers
from webrtc_broker.rtc.session import FrameHandler, Session, SessionClosed
from webrtc_broker.rtc.signaling import SignalingError
from webrtc_broker.rtc.writer import ChannelWriter, FlushScheduler, QueueOverflow

__all__ = [
    "ChannelWriter",
    "FlushScheduler",
    "FrameHandler",
    "QueueOverflow",
    "Session",
    "SessionClosed",
    "SignalingError",
    "rtc_ice_servers",
]
