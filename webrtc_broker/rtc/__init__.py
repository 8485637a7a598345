"""WebRTC sessions with the broker's two data channels, shared by servers and clients."""

from webrtc_broker.rtc.ice import rtc_ice_servers
from webrtc_broker.rtc.session import (
    CandidateRefused,
    FrameHandler,
    Session,
    SessionClosed,
    SessionEnd,
)
from webrtc_broker.rtc.signaling import SignalingError
from webrtc_broker.rtc.writer import ChannelWriter, FlushScheduler, QueueOverflow

__all__ = [
    "CandidateRefused",
    "ChannelWriter",
    "FlushScheduler",
    "FrameHandler",
    "QueueOverflow",
    "Session",
    "SessionClosed",
    "SessionEnd",
    "SignalingError",
    "rtc_ice_servers",
]
