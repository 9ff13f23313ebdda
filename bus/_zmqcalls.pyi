"""Types of bus/_zmqcalls.c (optional: built when a C compiler is there; see bus/_zmqio.py)."""

def configure(
    getsockopt: int,
    send: int,
    msg_init: int,
    msg_recv: int,
    msg_data: int,
    msg_size: int,
    msg_more: int,
    msg_close: int,
    errno: int,
    /,
) -> None: ...
def events(handle: int, /) -> int: ...
def send(handle: int, data: bytes, flags: int, /) -> int: ...
def recv(handle: int, flags: int, /) -> tuple[bytes, bool] | int: ...
