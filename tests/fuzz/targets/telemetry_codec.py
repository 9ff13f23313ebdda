"""Target ``telemetry_codec``: the telemetry upload codec, actors/telemetry/codec.py.

Input: the first byte picks the body's encoding (even: none, odd: deflate); the rest is the
body, read with ``decompress`` and ``decode_upload`` as the ingest side reads an upload.

Documented errors: ``ValueError`` (an unknown encoding, a corrupt deflate stream, a body that
is not an upload document).
"""

from __future__ import annotations

import contextlib

from actors.telemetry.codec import decode_upload, decompress

ERRORS = (ValueError,)


def fuzz_one(data: bytes) -> None:
    """Decode one upload body."""
    if not data:
        return
    encoding = "deflate" if data[0] & 1 else None
    with contextlib.suppress(ERRORS):
        decode_upload(decompress(data[1:], encoding))
    with contextlib.suppress(ERRORS):
        decode_upload(data[1:])
