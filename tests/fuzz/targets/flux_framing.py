"""Target ``flux_framing``: FLUX frames, actors/fluxfamily/framing.py (both TCP channels), and
the robot's reply parsers, actors/flux/commands.py.

Input: bytes fed in pieces (``_split.pieces``) to an ``AnswerReader`` (device -> client) and a
``CommandReader`` (client -> device, which switches to binary after an ``upload`` command, as
the simulator does); every text answer goes through ``parse_error`` and the reply parsers of
``actors.flux.commands``, and the raw bytes through ``raw_quit_end``.

Documented errors: ``ProtocolViolation`` from ``feed``; ``ValueError`` from
``parse_json_object``; the other parsers raise nothing.
"""

from __future__ import annotations

import contextlib

from actors.flux import commands
from actors.fluxfamily.framing import (
    AnswerReader,
    CommandReader,
    ProtocolViolation,
    Text,
    parse_error,
)
from tests.fuzz.targets._split import pieces

ERRORS = (ProtocolViolation,)


def _replies(text: str) -> None:
    parse_error(text)
    commands.parse_listing(text)
    commands.parse_kv(text)
    commands.parse_deviceinfo(text)
    commands.parse_config_get(text)
    with contextlib.suppress(ValueError):
        commands.parse_json_object(text)


def fuzz_one(data: bytes) -> None:
    """Feed ``data`` to both readers."""
    answers = AnswerReader()
    try:
        for piece in pieces(data):
            for event in answers.feed(piece):
                if isinstance(event, Text):
                    _replies(event.text)
    except ERRORS:
        pass
    commands.raw_quit_end(data)
    device_side = CommandReader()
    try:
        for piece in pieces(data):
            for event in device_side.feed(piece):
                if isinstance(event, Text) and event.text.startswith("upload "):
                    device_side.expect_binary(len(event.text))  # as the simulator does on upload
    except ERRORS:
        pass
    answers.take_buffer()
