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
    # The enum's constructor only for a plain int (it validates): this runs for every message.
    level = _LEVELS.get(
        compression if type(compression) is Compression else Compression(compression)
    )
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
        ValueError: The body is not a valid upload document (the message names what is wrong).
    """
    try:
        document = json.loads(body)
    except RecursionError:
        raise ValueError("bad upload document: nested too deep") from None
    except ValueError as exc:
        raise ValueError(f"bad upload document: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"bad upload document: a JSON {type(document).__name__}, not an object")
    messages = document.get("messages")
    if not isinstance(messages, list):
        raise ValueError("bad upload document: 'messages' must be a list")
    try:
        stream_group, stream = str(document["stream_group"]), str(document["stream"])
    except KeyError as exc:
        raise ValueError(f"bad upload document: no {exc}") from None
    decoded: list[dict[str, Any]] = []
    for index, item in enumerate(messages):
        if not isinstance(item, dict):
            raise ValueError(f"bad upload document: message {index} is not an object")
        message = {name: item.get(name) for name in _MESSAGE_FIELDS}
        seq = item.get("seq")
        # bool is an int to Python, and int() of a float truncates: only JSON integers count.
        if type(seq) is not int:
            raise ValueError(f"bad upload document: message {index} 'seq' must be an integer")
        message["seq"] = seq
        payload = item.get("payload") or ""
        if not isinstance(payload, str):
            raise ValueError(f"bad upload document: message {index} 'payload' must be base64")
        try:
            message["payload"] = base64.b64decode(payload, validate=True)
        except ValueError as exc:  # binascii.Error is a ValueError; so is a non-ASCII str
            raise ValueError(f"bad upload document: message {index} payload: {exc}") from exc
        decoded.append(message)
    return {"stream_group": stream_group, "stream": stream, "messages": decoded}
