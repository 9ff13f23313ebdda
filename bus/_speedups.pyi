"""Types of the optional C module bus/_speedups.c (see bus/_calls.py)."""

from collections.abc import Callable
from typing import Any

def configure(
    unpackb: Callable[..., Any],
    unpack_kwargs: dict[str, Any],
    has_timestamp: Callable[[bytes, Any], bool],
    event_type: type[tuple[Any, ...]],
    /,
) -> None: ...

class Decoder:
    def __init__(self, last: dict[bytes, list[Any]], fallback: Callable[[bytes], Any]) -> None: ...
    def decode(self, frame: bytes, /) -> Any: ...
