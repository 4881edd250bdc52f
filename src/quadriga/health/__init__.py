"""Heartbeats: the signed UDP datagrams agents send about their engines (`codec`), and the receiver that
checks them and hands them to the recorder in batches (`receiver`). The sender is the agent's
(`quadriga.agent.heartbeat`)."""

from quadriga.health.codec import (
    BadSignature,
    Heartbeat,
    HeartbeatError,
    ListenerBeat,
    Malformed,
    Payload,
    TooLarge,
    UnknownKey,
    UnsupportedVersion,
    decode,
    encode,
)
from quadriga.health.receiver import HeartbeatReceiver

__all__ = [
    "BadSignature",
    "Heartbeat",
    "HeartbeatError",
    "HeartbeatReceiver",
    "ListenerBeat",
    "Malformed",
    "Payload",
    "TooLarge",
    "UnknownKey",
    "UnsupportedVersion",
    "decode",
    "encode",
]
