"""The FCode container (flux.md §1.6): build and read it, for the simulator and for fixtures.

Layout: magic ``FCx0001\\n``; uint32-LE script size, script, int32 CRC32(script); uint32-LE
metadata size, ``k=v\\0k=v...``, int32 CRC32(metadata); then uint32 size + PNG per preview image,
ended by a size of 0 or the end of the data.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

__all__ = ["MAGIC", "FcodeError", "build_fcode", "read_fcode"]

MAGIC = b"FCx0001\n"
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
MAX_METADATA = 1 << 20


class FcodeError(ValueError):
    """The data is not a valid FCode file; ``reason`` is the device's FILE_BROKEN word."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _crc(data: bytes) -> int:
    (signed,) = _I32.unpack(_U32.pack(zlib.crc32(data)))  # the container stores it as int32
    return int(signed)


def build_fcode(script: bytes, metadata: dict[str, str], images: Sequence[bytes] = ()) -> bytes:
    """Assemble an FCode file."""
    meta = "\x00".join(f"{key}={value}" for key, value in metadata.items()).encode()
    parts = [
        MAGIC,
        _U32.pack(len(script)),
        script,
        _I32.pack(_crc(script)),
        _U32.pack(len(meta)),
        meta,
        _I32.pack(_crc(meta)),
    ]
    for image in images:
        parts += [_U32.pack(len(image)), image]
    return b"".join([*parts, _U32.pack(0)])


def read_fcode(data: bytes) -> tuple[dict[str, str], list[bytes]]:
    """Return the metadata and preview images of an FCode file.

    Raises:
        FcodeError: ``MAGIC_NUMBER_ERROR``, ``METADATA_TOO_LARGE``, ``METADATA_CRC32_ERROR`` or ``#``
            (truncated), the words the device puts after ``FILE_BROKEN``.
    """
    if not data.startswith(MAGIC):
        raise FcodeError("MAGIC_NUMBER_ERROR")
    try:
        offset = len(MAGIC)
        (script_size,) = _U32.unpack_from(data, offset)
        offset += 4 + script_size + 4
        (meta_size,) = _U32.unpack_from(data, offset)
        if meta_size > MAX_METADATA:
            raise FcodeError("METADATA_TOO_LARGE")
        meta = data[offset + 4 : offset + 4 + meta_size]
        (crc,) = _I32.unpack_from(data, offset + 4 + meta_size)
    except struct.error as exc:
        raise FcodeError("#") from exc
    if crc != _crc(meta):
        raise FcodeError("METADATA_CRC32_ERROR")
    offset += 4 + meta_size + 4
    images: list[bytes] = []
    while offset + 4 <= len(data):
        (size,) = _U32.unpack_from(data, offset)
        if not size:
            break
        images.append(data[offset + 4 : offset + 4 + size])
        offset += 4 + size
    pairs = (item.partition("=") for item in meta.decode("utf-8", errors="replace").split("\x00"))
    return {key: value for key, sep, value in pairs if sep}, images
