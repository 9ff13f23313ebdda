"""Target ``flashrunner``: the FlashRunner byte streams, actors/flashrunner/protocol.py.

Input: bytes fed in pieces (``_split.pieces``) to an ``AnswerParser`` (the device's answers, read
by the driver) and a ``RequestParser`` (the host's commands, read by the simulator); answers
that look like an engine status go through ``parse_engine_status``.

Documented errors: none from the parsers (bad input comes back as ``Garbled`` items or a
``Request`` with ``error`` set); ``ValueError`` from ``parse_engine_status``.
"""

from __future__ import annotations

import contextlib

from actors.flashrunner.protocol import Answer, AnswerParser, RequestParser, parse_engine_status
from tests.fuzz.targets._split import pieces

ERRORS = (ValueError,)


def fuzz_one(data: bytes) -> None:
    """Feed ``data`` to both parsers."""
    answers = AnswerParser(max_answer_bytes=512)  # small, so the garbage path is reached
    requests = RequestParser()
    for piece in pieces(data):
        for item in answers.feed(piece):
            if isinstance(item, Answer) and item.ok:
                with contextlib.suppress(ERRORS):
                    parse_engine_status(item)
        requests.feed(piece)
