"""Target ``discovery_datagram``: FLUX discovery datagrams on UDP 1901,
actors/fluxfamily/datagram.py.

Input: one datagram. ``parse_datagram`` reads it; a touch response is also checked with
``parse_touch_response`` against a fixed master key.

Documented errors: ``DatagramError`` (right magic and version, but truncated or inconsistent;
a touch response whose keys or signatures do not verify). ``parse_datagram`` returns None for
what a peer ignores.
"""

from __future__ import annotations

import contextlib

from actors.fluxfamily import crypto
from actors.fluxfamily.datagram import (
    DatagramError,
    TouchResponse,
    parse_datagram,
    parse_touch_response,
)
from tests.fuzz.targets._split import keys

ERRORS = (DatagramError,)

_MASTER_DER = crypto.public_der(keys()[2])


def fuzz_one(data: bytes) -> None:
    """Parse ``data`` as a datagram, and as a touch response when it is one."""
    try:
        parsed = parse_datagram(data)
    except ERRORS:
        return
    if isinstance(parsed, TouchResponse):
        for master in (_MASTER_DER, parsed.slave_der):
            with contextlib.suppress(ERRORS):
                parse_touch_response(data, master)
