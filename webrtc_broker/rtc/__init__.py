"""WebRTC sessions with the broker's two data channels, shared by servers and clients."""

from webrtc_broker.rtc.candidates import CandidatePolicy, PortMode, PortRangeExhausted
from webrtc_broker.rtc.ice import rtc_ice_servers
from webrtc_broker.rtc.session import (
    CandidateRefused,
    FrameHandler,
    Session,
    SessionClosed,
    SessionEnd,
)
from webrtc_broker.rtc.signaling import SignalingError
from webrtc_broker.rtc.udpmux import MuxError, UdpMux
from webrtc_broker.rtc.writer import ChannelWriter, FlushScheduler, QueueOverflow

__all__ = [
    "CandidatePolicy",
    "CandidateRefused",
    "ChannelWriter",
    "FlushScheduler",
    "FrameHandler",
    "MuxError",
    "PortMode",
    "PortRangeExhausted",
    "QueueOverflow",
    "Session",
    "SessionClosed",
    "SessionEnd",
    "SignalingError",
    "UdpMux",
    "rtc_ice_servers",
]
