"""Encode FlashRunner 2.0 command frames and parse its answers, without any I/O.

The wire is line-oriented ASCII (reference/flashrunner.md §3-4):

- host → device: ``#<ch>*CMD args\\n`` for one channel, ``#<mask>|CMD\\n`` for several
  (decimal mask, bit n-1 = channel n), ``#CMD\\n`` for the unit itself; channel 55 is the master.
- device → host: ``[NN|]payload`` ended by the prompt ``>`` (success) or ``!`` (failure);
  ``BUSY`` lines may come first while a long command runs.

Where the reference is silent, this module makes an assumption and names it here; each one is a
parameter, so it can be corrected without code churn once SMH's wheel or manual is read:

- **Binary attachments** (file chunks, encryption headers): a command carries ``<len> <crc32>`` as
  its last two arguments, ends with LF, and is followed by exactly ``len`` raw bytes. An answer that
  carries bytes reads ``NN|DATA <len> <crc32>`` + prompt, followed at once by ``len`` raw bytes.
  (The legacy DLL used YMODEM; the new library's framing is unknown, §12 item 4.)
- **Several channels**: ``MultiChannel.MASK`` sends one ``#<mask>|`` frame, ``MultiChannel.EACH``
  one ``#<ch>*`` frame per channel; either way the device answers once per channel (§12 item 2).
- **Error answers** start with a symbol such as ``ERR_FILE_NOT_FOUND``; it becomes the
  ``device_code`` of the fault (§12 item 7).
- **GETENGSTATUS** reads ``55|<one char per channel>|<more>``; ``B``/``R`` mean working, ``F``
  failed, anything else passed, as third-party code treats it (§6, §12 item 3).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from bus.errors import InvalidArguments

__all__ = [
    "MASTER_CHANNEL",
    "MAX_COMMAND_CHARS",
    "Answer",
    "AnswerParser",
    "Busy",
    "EngineState",
    "EngineStatus",
    "FileType",
    "Garbled",
    "MultiChannel",
    "Request",
    "RequestParser",
    "channel_mask",
    "channels_from_mask",
    "crc32_hex",
    "encode_answer",
    "encode_command",
    "encode_frame",
    "expected_answers",
    "format_engine_status",
    "parse_engine_status",
]

MASTER_CHANNEL = 55
MAX_COMMAND_CHARS = 256
MAX_CHANNEL = (
    32  # a decimal mask beyond 32 bits is not plausible for a 1-, 4-, 8- or 16-channel unit
)
PROMPT_OK = ord(">")
PROMPT_ERR = ord("!")
DATA_TOKEN = "DATA"
BUSY_TOKEN = "BUSY"
MAX_ANSWER_BYTES = 64 * 1024  # no prompt within this many bytes: the stream is garbage
_PROMPTS = re.compile(rb"[>!]")
_LINE_END = re.compile(rb"[\r\n]")
_TAG = re.compile(r"^(\d{1,2})\|")
_DATA = re.compile(r"^DATA (\d+) ([0-9A-Fa-f]{8})$")
_CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


class FileType(StrEnum):
    """The file categories of ``fr_comm.FR_FileType``; the value is the token sent on the wire."""

    FRB = "FRB"
    PRJ = "PRJ"
    LIC = "LIC"
    LOG = "LOG"
    LIB = "LIB"


class MultiChannel(StrEnum):
    """How a command for several channels is framed (the real encoding is unconfirmed)."""

    MASK = "mask"
    EACH = "each"


def crc32_hex(data: bytes) -> str:
    """Return the CRC-32 of ``data`` as 8 lower-case hex digits."""
    return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"


def _check_channel(channel: int) -> None:
    if channel != MASTER_CHANNEL and not 1 <= channel <= MAX_CHANNEL:
        raise InvalidArguments(
            f"channel {channel} out of range (1..{MAX_CHANNEL} or {MASTER_CHANNEL})",
            details={"argument": "channels", "expected": f"1..{MAX_CHANNEL} or {MASTER_CHANNEL}"},
        )


def channel_mask(channels: Iterable[int]) -> int:
    """Return the decimal channel mask of ``channels`` (bit n-1 enables channel n)."""
    mask = 0
    for channel in channels:
        _check_channel(channel)
        if channel == MASTER_CHANNEL:
            raise InvalidArguments(
                "the master channel cannot be part of a mask", details={"argument": "channels"}
            )
        mask |= 1 << (channel - 1)
    return mask


def channels_from_mask(mask: int) -> tuple[int, ...]:
    """Return the channels enabled in ``mask``, in ascending order."""
    return tuple(bit + 1 for bit in range(mask.bit_length()) if mask >> bit & 1)


def _normalise_channels(channels: int | Sequence[int] | None) -> tuple[int, ...]:
    if channels is None:
        return ()
    if isinstance(channels, int):
        channels = (channels,)
    unique = tuple(sorted(set(channels)))
    if not unique:
        raise InvalidArguments("empty channel list", details={"argument": "channels"})
    for channel in unique:
        _check_channel(channel)
    if MASTER_CHANNEL in unique and len(unique) > 1:
        raise InvalidArguments(
            "the master channel cannot be combined with others", details={"argument": "channels"}
        )
    return unique


def encode_frame(frame: str) -> bytes:
    """Check a complete frame such as ``#55*SPING`` (what ``FR_SendCommand`` takes) and add LF."""
    text = frame.strip()
    if not text.startswith("#"):
        raise InvalidArguments(
            f"a command starts with '#': {frame!r}", details={"argument": "command"}
        )
    if len(text) > MAX_COMMAND_CHARS:
        raise InvalidArguments(
            f"command longer than {MAX_COMMAND_CHARS} characters", details={"argument": "command"}
        )
    if any(ch in text for ch in "\r\n") or not text.isascii():
        raise InvalidArguments("a command is one line of ASCII", details={"argument": "command"})
    return text.encode("ascii") + b"\n"


def encode_command(
    command: str,
    channels: int | Sequence[int] | None = None,
    *,
    multi: MultiChannel = MultiChannel.MASK,
    data: bytes | None = None,
) -> bytes:
    """Build the frame(s) that send ``command`` to ``channels``.

    Args:
        command: The command and its arguments, without ``#`` or channel header (``RUN a.prj``).
        channels: None for the unit itself (``#CMD``), one channel, or a list of channels.
        multi: How a list of several channels is framed.
        data: Raw bytes to attach; ``<len> <crc32>`` are appended to the arguments.

    Raises:
        InvalidArguments: A channel is out of range, the command is empty or too long.
    """
    body = command.strip()
    if not body or body.startswith("#"):
        raise InvalidArguments(
            f"bad command {command!r}: give it without '#' and channel",
            details={"argument": "command"},
        )
    if data is not None:
        body = f"{body} {len(data)} {crc32_hex(data)}"
    selected = _normalise_channels(channels)
    if not selected:
        headers = ["#"]
    elif len(selected) == 1:
        headers = [f"#{selected[0]}*"]
    elif multi is MultiChannel.MASK:
        headers = [f"#{channel_mask(selected)}|"]
    else:
        headers = [f"#{channel}*" for channel in selected]
    attachment = data or b""
    return b"".join(encode_frame(header + body) + attachment for header in headers)


def expected_answers(frame: str) -> int:
    """Return how many answers the device sends for a complete frame (one per addressed channel)."""
    match = re.match(r"#\s*(\d+)\s*\|", frame.strip())
    if match:
        return max(1, len(channels_from_mask(int(match.group(1)))))
    return 1


# ---------------------------------------------------------------- answers (device → host)


@dataclass(frozen=True, slots=True)
class Answer:
    """One complete answer: the payload before the prompt, and its raw bytes if it carried any."""

    ok: bool
    text: str
    channel: int | None = None
    data: bytes | None = None

    @property
    def prompt(self) -> str:
        """The prompt character that ended the answer."""
        return ">" if self.ok else "!"

    @property
    def raw(self) -> str:
        """The answer as the device sent it (channel tag, payload, prompt), as ``FR_GetAnswer`` returns it."""
        tag = "" if self.channel is None else f"{self.channel:02d}|"
        return f"{tag}{self.text}{self.prompt}"

    @property
    def error_code(self) -> str | None:
        """The device's error symbol (first word of a failure answer), if it gave one."""
        if self.ok or not self.text:
            return None
        word = self.text.split(maxsplit=1)[0].rstrip(":")
        return word if _CODE.match(word) else None


@dataclass(frozen=True, slots=True)
class Busy:
    """A BUSY frame: the device is still working on the current command."""

    channel: int | None = None


@dataclass(frozen=True, slots=True)
class Garbled:
    """Bytes that are not a valid answer; the parser has skipped past them."""

    raw: bytes
    reason: str


def _split_tag(text: str) -> tuple[int | None, str]:
    match = _TAG.match(text)
    if match is None:
        return None, text
    return int(match.group(1)), text[match.end() :]


class AnswerParser:
    """Turn the device's byte stream into ``Answer``/``Busy``/``Garbled`` items.

    ``feed`` may be given any slice of the stream; an incomplete answer stays buffered until the
    rest arrives.
    """

    def __init__(self, *, max_answer_bytes: int = MAX_ANSWER_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_answer_bytes
        self._pending_data: tuple[Answer, int, str] | None = None

    def reset(self) -> None:
        """Forget any partial input (after a reconnect)."""
        self._buffer.clear()
        self._pending_data = None

    def feed(self, data: bytes) -> list[Answer | Busy | Garbled]:
        """Add bytes from the device; return every item they complete, in order."""
        self._buffer += data
        items: list[Answer | Busy | Garbled] = []
        while True:
            item = self._next()
            if item is None:
                return items
            items.append(item)

    def _next(self) -> Answer | Busy | Garbled | None:
        if self._pending_data is not None:
            return self._next_data()
        buf = self._buffer
        start = 0
        while start < len(buf) and buf[start] in b"\r\n \t\0":
            start += 1
        del buf[:start]
        prompt = _PROMPTS.search(buf)
        line_end = _LINE_END.search(buf)
        if line_end is not None and (prompt is None or line_end.start() < prompt.start()):
            line = bytes(buf[: line_end.start()])
            channel, text = _split_tag(line.decode("ascii", "replace").strip())
            if text.upper() == BUSY_TOKEN:
                del buf[: line_end.end()]
                return Busy(channel)
        if prompt is None:
            if len(buf) > self._max:
                raw = bytes(buf)
                buf.clear()
                return Garbled(raw, f"no prompt within {self._max} bytes")
            return None
        end = prompt.start()
        raw = bytes(buf[: end + 1])
        del buf[: end + 1]
        if not all(byte in _PRINTABLE for byte in raw[:-1]):
            return Garbled(raw, "non-printable bytes in answer")
        channel, text = _split_tag(raw[:-1].decode("ascii").strip())
        answer = Answer(ok=raw[-1] == PROMPT_OK, text=text.strip(), channel=channel)
        data = _DATA.match(answer.text) if answer.ok else None
        if data is not None:
            self._pending_data = (answer, int(data.group(1)), data.group(2).lower())
            return self._next_data()
        return answer

    def _next_data(self) -> Answer | Garbled | None:
        assert self._pending_data is not None
        header, size, crc = self._pending_data
        if len(self._buffer) < size:
            return None
        payload = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._pending_data = None
        if crc32_hex(payload) != crc:
            return Garbled(payload, f"data CRC mismatch (expected {crc}, got {crc32_hex(payload)})")
        return Answer(ok=True, text=header.text, channel=header.channel, data=payload)


def encode_answer(
    text: str = "",
    *,
    ok: bool = True,
    channel: int | None = MASTER_CHANNEL,
    data: bytes | None = None,
) -> bytes:
    """Build an answer as the device sends it (used by the simulator and by tests)."""
    if data is not None:
        text = f"{DATA_TOKEN} {len(data)} {crc32_hex(data)}"
    tag = "" if channel is None else f"{channel:02d}|"
    text = text.replace(">", ")").replace("!", ".")  # a prompt character would end the answer early
    return f"{tag}{text}{'>' if ok else '!'}".encode("ascii", "replace") + (data or b"")


# ---------------------------------------------------------------- requests (host → device)


@dataclass(frozen=True, slots=True)
class Request:
    """One command frame as the device reads it.

    ``channels`` is empty for ``#CMD`` (the unit itself); ``error`` is set when the frame was invalid.
    """

    channels: tuple[int, ...]
    name: str
    args: tuple[str, ...] = ()
    data: bytes | None = None
    error: str | None = None
    masked: bool = False


_HEADER = re.compile(r"^#\s*(?:(\d+)\s*([*|]))?\s*(\S+)\s*(.*)$", re.DOTALL)


@dataclass
class RequestParser:
    """Turn the host's byte stream into ``Request`` items (the device side, for the simulator).

    ``blob_commands`` names the commands followed by raw bytes (their last two arguments are the
    byte count and CRC-32; the header line must end with LF or CRLF). Lines end with LF, CRLF or
    CR; text before ``#`` is ignored.
    """

    blob_commands: frozenset[str] = frozenset({"FSDATA", "DYNMEMKEY", "DYNMEMSETENC"})
    _buffer: bytearray = field(default_factory=bytearray)
    _pending: tuple[Request, int, str] | None = None
    _skip_lf: bool = False

    def feed(self, data: bytes) -> list[Request]:
        """Add bytes from the host; return every request they complete, in order."""
        self._buffer += data
        out: list[Request] = []
        while (request := self._next()) is not None:
            out.append(request)
        return out

    def _next(self) -> Request | None:
        buf = self._buffer
        if self._pending is not None:
            request, size, crc = self._pending
            if len(buf) < size:
                return None
            payload = bytes(buf[:size])
            del buf[:size]
            self._pending = None
            if crc32_hex(payload) != crc:
                return Request(
                    request.channels, request.name, request.args, error="ERR_CRC data CRC mismatch"
                )
            return Request(
                request.channels, request.name, request.args, payload, masked=request.masked
            )
        # A loop over the lines without a command, not a recursion: a host sending thousands
        # of blank lines at once must not exhaust the stack (tests/fuzz regression).
        while True:
            if self._skip_lf and buf[:1] == b"\n":
                del buf[:1]  # the LF of a CRLF whose CR already ended the previous line
            self._skip_lf = False
            line_end = _LINE_END.search(buf)
            if line_end is None:
                if len(buf) > MAX_COMMAND_CHARS:
                    buf.clear()
                    return Request((), "", error="ERR_TOO_LONG command too long")
                return None
            end = line_end.end()
            if buf[line_end.start()] == 0x0D:
                if end == len(buf):
                    self._skip_lf = True  # answer a CR-terminated command now; drop a later LF
                elif buf[end] == 0x0A:
                    end += 1
            line = bytes(buf[: line_end.start()])
            del buf[:end]
            hash_at = line.find(b"#")
            if hash_at >= 0:
                return self._parse_line(line[hash_at:])
            if not buf:
                return None

    def _parse_line(self, line: bytes) -> Request | None:
        if len(line) > MAX_COMMAND_CHARS:
            return Request((), "", error="ERR_TOO_LONG command too long")
        match = _HEADER.match(line.decode("ascii", "replace").strip())
        if match is None:
            return Request((), "", error="ERR_SYNTAX empty command")
        number, sep, name, rest = match.groups()
        masked = sep == "|"
        channels: tuple[int, ...] = ()
        if number is not None:
            channels = channels_from_mask(int(number)) if masked else (int(number),)
        request = Request(channels, name.upper(), tuple(rest.split()), masked=masked)
        if request.name in self.blob_commands:
            if len(request.args) < 2 or not request.args[-2].isdigit():
                return Request(
                    channels, request.name, request.args, error="ERR_SYNTAX missing <len> <crc>"
                )
            self._pending = (
                Request(channels, request.name, request.args[:-2], masked=masked),
                int(request.args[-2]),
                request.args[-1].lower(),
            )
            return self._next()
        return request


# ---------------------------------------------------------------- engine status


class EngineState(StrEnum):
    """The state of one engine (channel) as GETENGSTATUS reports it; the value is its character."""

    IDLE = "I"
    BUSY = "B"
    RUNNING = "R"
    PASS = "P"
    FAIL = "F"
    ABSENT = "-"

    @property
    def working(self) -> bool:
        """True while the engine has not finished."""
        return self in (EngineState.BUSY, EngineState.RUNNING)


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """The parsed GETENGSTATUS answer: raw character and state per channel, plus further fields."""

    chars: dict[int, str]
    extra: tuple[str, ...] = ()

    def state(self, channel: int) -> EngineState:
        """The state of ``channel``; unknown characters count as passed (as T1 treats them)."""
        char = self.chars.get(channel, "-").upper()
        try:
            return EngineState(char)
        except ValueError:
            return EngineState.PASS

    def working(self, channels: Iterable[int]) -> list[int]:
        """The channels among ``channels`` that are still busy or running."""
        return [ch for ch in channels if self.state(ch).working]


def parse_engine_status(answer: Answer) -> EngineStatus:
    """Parse a GETENGSTATUS answer (``55|<chars>|<more>``).

    Raises:
        ValueError: The answer is a failure or has fewer than two fields.
    """
    fields = answer.text.split("|")
    if not answer.ok or not fields or not fields[0]:
        raise ValueError(f"not an engine status: {answer.raw!r}")
    if answer.channel is None:
        # Some firmware may not tag the answer; then the first field is the tag (T1 requires 55).
        if len(fields) < 2 or not fields[0].isdigit():
            raise ValueError(f"not an engine status: {answer.raw!r}")
        fields = fields[1:]
    states = {index + 1: char for index, char in enumerate(fields[0])}
    return EngineStatus(states, tuple(fields[1:]))


def format_engine_status(states: Sequence[EngineState], *extra: str) -> str:
    """Build the payload of a GETENGSTATUS answer (device side)."""
    return "|".join(["".join(state.value for state in states), *extra])
