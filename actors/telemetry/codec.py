"""The upload body of the ingest protocol (docs/INGEST_PROTOCOL.md), both ways, and its compression.

Sans-io: bytes and dicts in, bytes and dicts out; the forwarder and the reference ingest server
share it so the two ends cannot drift.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

import structlog

from actors.telemetry.model import Compression, Upload

__all__ = ["compress", "decode_upload", "decompress", "encode_upload"]

log = structlog.get_logger()

# HTTP's "deflate" is the zlib format (RFC 9110 §8.4.1.2); every HTTP stack can read it.
_LEVELS = {Compression.FASTEST: 1, Compression.SMALLEST_SIZE: 9}
_MESSAGE_FIELDS = (
    "seq",
    "stream_seq",
    "kind",
    "message_id",
    "batch_id",
    "batch_slice_id",
    "chunk_id",
    "timestamp",
)


def compress(body: bytes, compression: Compression) -> tuple[bytes, str | None]:
    """Compress ``body`` as the stream asks; returns ``(bytes, Content-Encoding or None)``.

    Like the Spotflow SDK, a body that compression would not shrink is sent as it is.
    """
    level = _LEVELS.get(Compression(compression))
    if level is None:
        return body, None
    packed = zlib.compress(body, level)
    if len(packed) >= len(body):
        log.debug("telemetry_compression_skipped", size=len(body), compressed=len(packed))
        return body, None
    return packed, "deflate"


def decompress(body: bytes, content_encoding: str | None) -> bytes:
    """Undo ``compress``.

    Raises:
        ValueError: Unknown content encoding or a corrupt deflate stream.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error as exc:
            raise ValueError(f"corrupt deflate body: {exc}") from exc
    raise ValueError(f"unsupported Content-Encoding {content_encoding!r}")


def encode_upload(upload: Upload) -> bytes:
    """The JSON body of ``PUT /v1/devices/{device}/uploads/{upload_id}`` (uncompressed)."""
    return json.dumps(
        {
            "upload_id": upload.upload_id,
            "stream_group": upload.stream_group,
            "stream": upload.stream,
            "messages": [
                {
                    "seq": m.seq,
                    "stream_seq": m.stream_seq,
                    "kind": str(m.kind),
                    "message_id": m.message_id,
                    "batch_id": m.batch_id,
                    "batch_slice_id": m.batch_slice_id,
                    "chunk_id": m.chunk_id,
                    "timestamp": m.timestamp,
                    "payload": base64.b64encode(m.payload).decode("ascii"),
                }
                for m in upload.messages
            ],
        },
        separators=(",", ":"),
    ).encode()


def decode_upload(body: bytes) -> dict[str, Any]:
    """Parse and check an upload body; payloads come back as bytes.

    Raises:
        ValueError: The body is not a valid upload document.
    """
    try:
        document = json.loads(body)
        messages = document["messages"]
        stream_group, stream = str(document["stream_group"]), str(document["stream"])
        decoded: list[dict[str, Any]] = []
        for item in messages:
            message = {name: item.get(name) for name in _MESSAGE_FIELDS}
            message["seq"] = int(item["seq"])
            message["payload"] = base64.b64decode(item.get("payload") or "", validate=True)
            decoded.append(message)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad upload document: {exc}") from exc
    return {"stream_group": stream_group, "stream": stream, "messages": decoded}
