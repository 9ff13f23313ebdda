"""The sans-io pieces of the telemetry forwarder: compression, the upload body, Retry-After.

Its back-off is ``bus.backoff.Backoff`` (tests/unit/test_backoff.py)."""

from __future__ import annotations

import os

import pytest

from actors.telemetry.codec import compress, decode_upload, decompress, encode_upload
from actors.telemetry.model import Compression, MessageKind, StoredMessage, Upload
from actors.telemetry.upstream import parse_retry_after


class TestCompression:
    @pytest.mark.parametrize("compression", [Compression.FASTEST, Compression.SMALLEST_SIZE])
    def test_compressible_body_is_deflated_and_restored(self, compression: Compression) -> None:
        """Both levels produce HTTP deflate that decompress() restores."""
        body = b'{"temperatureCelsius": 21.5}' * 200
        packed, encoding = compress(body, compression)
        assert encoding == "deflate" and len(packed) < len(body)
        assert decompress(packed, encoding) == body

    def test_smallest_is_not_bigger_than_fastest(self) -> None:
        """SMALLEST_SIZE trades time for size."""
        body = " ".join(str(i * 7919 % 1000) for i in range(5000)).encode()
        assert len(compress(body, Compression.SMALLEST_SIZE)[0]) <= len(
            compress(body, Compression.FASTEST)[0]
        )

    @pytest.mark.parametrize("compression", list(Compression))
    def test_incompressible_body_is_sent_as_is(self, compression: Compression) -> None:
        """Compression that would not shrink the body is skipped (as the Spotflow SDK does)."""
        body = os.urandom(2000)
        assert compress(body, compression) == (body, None)

    def test_unknown_encoding_is_refused(self) -> None:
        """The server answers 400 for encodings it cannot read."""
        with pytest.raises(ValueError, match="unsupported"):
            decompress(b"x", "br")
        with pytest.raises(ValueError, match="corrupt"):
            decompress(b"not zlib", "deflate")


def test_upload_body_round_trip() -> None:
    """What the forwarder encodes, the server decodes, binary payloads included."""
    message = StoredMessage(
        seq=7,
        stream_group="g",
        stream="s",
        stream_seq=3,
        message_id="m",
        batch_id="b",
        batch_slice_id="sl",
        chunk_id="c",
        kind=MessageKind.MESSAGE,
        compression=Compression.UNCOMPRESSED,
        timestamp=1.5,
        payload=b"\x00\xffdata",
        state="pending",
    )
    decoded = decode_upload(
        encode_upload(Upload("u1", "g", "s", Compression.UNCOMPRESSED, (message,)))
    )
    assert decoded["stream_group"] == "g" and decoded["stream"] == "s"
    (item,) = decoded["messages"]
    assert item == {
        "seq": 7,
        "stream_seq": 3,
        "kind": "message",
        "message_id": "m",
        "batch_id": "b",
        "batch_slice_id": "sl",
        "chunk_id": "c",
        "timestamp": 1.5,
        "payload": b"\x00\xffdata",
    }
    with pytest.raises(ValueError, match="bad upload"):
        decode_upload(b'{"messages": [{}]}')


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), (None, None), ("", None), ("soon", None), ("Thu, 01 Jan 1970 00:01:40 GMT", 40.0)],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    """Delta-seconds and HTTP-dates (measured from ``now``); garbage is ignored."""
    assert parse_retry_after(header, now=60.0) == expected
