"""Target ``manage_protocol``: FLUX device management answers, actors/fluxfamily/manage_protocol.py.

Input: the first byte picks what is read: even, the device's answer stream (framed as the
management channel frames it, ``AnswerReader``) with each answer classified by ``parse_answer``;
odd, the device's certificate (DER) read by ``uuid_from_certificate``.

Documented errors: ``ProtocolViolation`` from the framing; ``ValueError`` from
``uuid_from_certificate`` (not a certificate, no CN, a CN that is not ``<uuid>:<serial>:``).
``parse_answer`` raises nothing: an answer it does not know is kind ``unknown``.
"""

from __future__ import annotations

import contextlib

from actors.fluxfamily.framing import AnswerReader, ProtocolViolation, Text
from actors.fluxfamily.manage_protocol import parse_answer, uuid_from_certificate
from tests.fuzz.targets._split import pieces

ERRORS = (ProtocolViolation, ValueError)


def fuzz_one(data: bytes) -> None:
    """Read ``data`` as answers or as a certificate."""
    if not data:
        return
    if data[0] & 1:
        with contextlib.suppress(ValueError):
            uuid_from_certificate(data[1:])
        return
    reader = AnswerReader()
    try:
        for piece in pieces(data[1:]):
            for event in reader.feed(piece):
                if isinstance(event, Text):
                    parse_answer(event.text)
    except ProtocolViolation:
        pass
