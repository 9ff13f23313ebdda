"""Camera frames for the simulator: a small baseline JPEG encoder in the standard library.

The published client decodes the cam add-on's image with Pillow and reshapes it to (H, W, 3), so
the frame must be a real RGB JPEG (reference/rerobots-client.md §4). Pillow is not a dependency
of linebus, hence this encoder: baseline sequential DCT (SOF0), three components (YCbCr, no
subsampling), a flat quantisation table and Huffman tables that give every symbol a code of the
same length (valid for any decoder, if not the smallest file). A frame is a colour gradient with
a bar whose position follows the time, so successive frames differ.
"""

from __future__ import annotations

import functools
import math
import struct

__all__ = ["FRAME_HEIGHT", "FRAME_WIDTH", "camera_frame", "encode_jpeg"]

FRAME_WIDTH = 64
FRAME_HEIGHT = 48

_ZIGZAG = (
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
)  # fmt: skip
_QUANT = 6  # the same step for every coefficient of every component
# Huffman tables: DC categories 0..11 all get 4-bit codes; the 162 AC symbols (EOB, ZRL and
# run/size 0..15 x 1..10) all get 8-bit codes. Canonical codes are then just 0, 1, 2, ...
_DC_SYMBOLS = tuple(range(12))
_DC_LENGTH = 4
_AC_SYMBOLS = (0x00, 0xF0, *sorted((run << 4) | size for run in range(16) for size in range(1, 11)))
_AC_LENGTH = 8
_DC_CODES = {symbol: (index, _DC_LENGTH) for index, symbol in enumerate(_DC_SYMBOLS)}
_AC_CODES = {symbol: (index, _AC_LENGTH) for index, symbol in enumerate(_AC_SYMBOLS)}


@functools.cache
def _cosines() -> tuple[tuple[float, ...], ...]:
    """cos((2x+1)uπ/16) scaled by C(u)/2, indexed [u][x]: one 1-D DCT is a matrix product."""
    rows = []
    for u in range(8):
        scale = math.sqrt(0.125) if u == 0 else 0.5
        rows.append(tuple(scale * math.cos((2 * x + 1) * u * math.pi / 16) for x in range(8)))
    return tuple(rows)


def _dct(block: list[float]) -> list[float]:
    """The 2-D DCT-II of an 8x8 block (row-major), as JPEG defines it."""
    cos = _cosines()
    rows = [
        [sum(cos[u][x] * block[y * 8 + x] for x in range(8)) for u in range(8)] for y in range(8)
    ]
    out = [0.0] * 64
    for v in range(8):
        for u in range(8):
            out[v * 8 + u] = sum(cos[v][y] * rows[y][u] for y in range(8))
    return out


class _BitWriter:
    def __init__(self) -> None:
        self.data = bytearray()
        self._acc = 0
        self._bits = 0

    def write(self, value: int, length: int) -> None:
        self._acc = (self._acc << length) | (value & ((1 << length) - 1))
        self._bits += length
        while self._bits >= 8:
            self._bits -= 8
            byte = (self._acc >> self._bits) & 0xFF
            self.data.append(byte)
            if byte == 0xFF:
                self.data.append(0x00)  # byte stuffing
        self._acc &= (1 << self._bits) - 1

    def flush(self) -> bytes:
        if self._bits:
            self.write((1 << (8 - self._bits)) - 1, 8 - self._bits)  # pad with 1 bits
        return bytes(self.data)


def _category(value: int) -> tuple[int, int]:
    """JPEG's (size, amplitude bits) of a coefficient."""
    size = abs(value).bit_length()
    return size, value if value >= 0 else value + (1 << size) - 1


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", 0xFF00 | marker, len(payload) + 2) + payload


def _huffman_table(table_class: int, table_id: int, symbols: tuple[int, ...], length: int) -> bytes:
    bits = [0] * 16
    bits[length - 1] = len(symbols)
    return bytes([(table_class << 4) | table_id, *bits, *symbols])


def encode_jpeg(width: int, height: int, pixels: bytes) -> bytes:
    """A baseline JPEG of an RGB image (``pixels``: ``width * height * 3`` bytes, row-major).

    Raises:
        ValueError: the sizes do not match, or a side is not 1..65535.
    """
    if not (0 < width < 65536 and 0 < height < 65536) or len(pixels) != width * height * 3:
        raise ValueError("pixels must hold width * height RGB triples")
    planes: list[list[float]] = [[], [], []]
    for i in range(0, len(pixels), 3):
        r, g, b = pixels[i], pixels[i + 1], pixels[i + 2]
        planes[0].append(0.299 * r + 0.587 * g + 0.114 * b - 128)
        planes[1].append(-0.168736 * r - 0.331264 * g + 0.5 * b)
        planes[2].append(0.5 * r - 0.418688 * g - 0.081312 * b)
    writer = _BitWriter()
    previous_dc = [0, 0, 0]
    for block_y in range(0, height, 8):
        for block_x in range(0, width, 8):
            for component, plane in enumerate(planes):
                block = [
                    plane[min(block_y + y, height - 1) * width + min(block_x + x, width - 1)]
                    for y in range(8)
                    for x in range(8)
                ]  # edge pixels repeat past the border
                coefficients = [round(c / _QUANT) for c in _dct(block)]
                zigzag = [coefficients[index] for index in _ZIGZAG]
                size, bits = _category(zigzag[0] - previous_dc[component])
                previous_dc[component] = zigzag[0]
                writer.write(*_DC_CODES[size])
                writer.write(bits, size)
                run = 0
                for value in zigzag[1:]:
                    if value == 0:
                        run += 1
                        continue
                    while run > 15:
                        writer.write(*_AC_CODES[0xF0])
                        run -= 16
                    size, bits = _category(value)
                    writer.write(*_AC_CODES[(run << 4) | size])
                    writer.write(bits, size)
                    run = 0
                if run:
                    writer.write(*_AC_CODES[0x00])
    scan = writer.flush()
    quant = bytes([0, *([_QUANT] * 64)])
    frame = struct.pack(">BHHB", 8, height, width, 3) + bytes([1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0])
    tables = b"".join(
        _huffman_table(table_class, table_id, symbols, length)
        for table_class, table_id, symbols, length in (
            (0, 0, _DC_SYMBOLS, _DC_LENGTH),
            (1, 0, _AC_SYMBOLS, _AC_LENGTH),
        )
    )
    scan_header = bytes([3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0])
    return b"".join(
        (
            b"\xff\xd8",
            _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
            _segment(0xDB, quant),
            _segment(0xC0, frame),
            _segment(0xC4, tables),
            _segment(0xDA, scan_header),
            scan,
            b"\xff\xd9",
        )
    )


def camera_frame(camera: int, now: float) -> bytes:
    """The JPEG frame of ``camera`` at time ``now`` (a gradient and a moving bar)."""
    return _frame(camera, int(now * 4) % FRAME_WIDTH)


@functools.lru_cache(maxsize=64)
def _frame(camera: int, bar: int) -> bytes:
    pixels = bytearray()
    for y in range(FRAME_HEIGHT):
        for x in range(FRAME_WIDTH):
            if abs(x - bar) < 3:
                pixels += b"\xff\xff\xff"
            else:
                r = 255 * x // (FRAME_WIDTH - 1)
                g = 255 * y // (FRAME_HEIGHT - 1)
                b = (96 + 80 * camera) % 256
                pixels += bytes((r, g, b))
    return encode_jpeg(FRAME_WIDTH, FRAME_HEIGHT, bytes(pixels))
