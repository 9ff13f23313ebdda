"""Target ``codec``: the wire codec, bus/protocol.py (command-channel messages and events).

Input: the first byte picks the channel (even: a command-channel message, odd: an event frame);
the rest is the message's frames (``_split.frames``) or the event frame.

Documented errors (docs/PROTOCOL.md §4-§12; the docstrings of ``decode``, ``split``,
``decode_event``, ``unpack_value``): ``BadRequest`` for anything malformed and
``UnsupportedVersion`` for another protocol version. ``error_msg_id`` and ``peek_msg_id`` raise
nothing.
"""

from __future__ import annotations

import contextlib

from bus import protocol
from bus.errors import BadRequest, UnsupportedVersion
from tests.fuzz.targets._split import frames

ERRORS = (BadRequest, UnsupportedVersion)


def fuzz_one(data: bytes) -> None:
    """Decode ``data`` as a message or an event, and the payload it carries."""
    if not data:
        return
    if data[0] & 1:
        with contextlib.suppress(ERRORS):
            protocol.decode_event(data[1:])
        return
    message_frames = frames(data[1:])
    if message_frames:
        protocol.error_msg_id(message_frames[0])  # documented to raise nothing
    try:
        message = protocol.decode(message_frames)
    except ERRORS:
        return
    with contextlib.suppress(ERRORS):
        message.value()
    with contextlib.suppress(ERRORS):
        protocol.unpack_small(message.payload)
    # The fast path receivers use must agree with decode on a header decode accepted.
    _kind, header = protocol.split(message_frames[0])
    protocol.peek_msg_id(header)
