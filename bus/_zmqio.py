"""Frame I/O on pyzmq sockets for the hot paths, without pyzmq's Python layer.

pyzmq's ``zmq.Socket`` is a Python subclass (``zmq.sugar``) of its Cython socket. Its ``send``,
``send_multipart`` and ``recv_multipart`` add Python work to every frame (keyword handling,
buffer checks per part, option values turned into ``IntEnum`` members), and ending a drain loop
on ``zmq.Again`` builds an exception (two ``__init__``, an import, a strerror) per wake-up. On
the broker's routing loop that was about a third of its Python time per message. These helpers
call the Cython methods directly and ask ``ZMQ_EVENTS`` instead of provoking EAGAIN; they behave
as the sugar methods do (the same errors: ``zmq.Again`` on a full queue, ``EHOSTUNREACH`` from a
ROUTER_MANDATORY socket...).

Where ``bus._zmqcalls`` was built (setup.py; bus/_zmqcalls.c), the non-blocking calls go
straight to libzmq with the GIL held: no enum lookup per ``ZMQ_EVENTS`` query, and no hand-over
of the GIL per send and receive to another busy thread of the process. ``LINEBUS_PURE_PYTHON``
turns it off; a blocking call always goes through pyzmq. Both paths are tested alike.

Only pyzmq is imported: the client core uses this module too (tests/unit/test_client_imports.py).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence
from types import ModuleType
from typing import Any, cast

import zmq
from zmq.backend import Socket as _CSocket

__all__ = ["NOBLOCK", "events", "readable", "recv_frame", "recv_rest", "send_frame", "send_frames"]

NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_COPY_THRESHOLD = zmq.COPY_THRESHOLD  # pyzmq copies a frame below it even with copy=False
_send = _CSocket.send
_recv = _CSocket.recv
_get = _CSocket.get


def _send_frames_pyzmq(
    sock: zmq.Socket[Any], frames: Sequence[Any], flags: int = NOBLOCK, copy: bool = True
) -> None:
    """``sock.send_multipart(frames, flags, copy=copy)``: every frame but the last with SNDMORE.

    ``frames`` hold bytes, buffers or ``zmq.Frame``; with ``copy=False`` a buffer is sent without
    copying when it is at least the socket's ``copy_threshold`` (as pyzmq does).
    """
    last = len(frames) - 1
    if last:
        more = flags | _SNDMORE
        for i in range(last):
            _send(sock, frames[i], more, copy)
    _send(sock, frames[last], flags, copy)


def _send_frame_pyzmq(sock: zmq.Socket[Any], frame: bytes, flags: int = NOBLOCK) -> None:
    """``sock.send(frame, flags)``: one frame, copied (half the cost of pyzmq's ``send`` for a
    small frame; an actor publishes each event this way)."""
    _send(sock, frame, flags, True)


def _events_pyzmq(sock: zmq.Socket[Any]) -> int:
    """``ZMQ_EVENTS`` of ``sock`` as a plain int (``zmq.POLLIN`` and ``zmq.POLLOUT`` bits)."""
    # An int option; pyzmq's stubs type every get() as int | bytes.
    return cast(int, _get(sock, _EVENTS))


def _readable_pyzmq(sock: zmq.Socket[Any]) -> bool:
    """Whether a message is waiting in ``sock`` (``ZMQ_EVENTS`` has POLLIN): what a drain loop
    asks before each receive, instead of ending on ``zmq.Again``."""
    return bool(_events_pyzmq(sock) & _POLLIN)


def _recv_frame_pyzmq(sock: zmq.Socket[Any], flags: int = 0) -> tuple[bytes, bool]:
    """One frame as bytes, and whether more frames of its message follow (read from the frame
    itself: ``getsockopt(RCVMORE)`` costs an ``IntEnum`` lookup in pyzmq)."""
    frame = _recv(sock, flags, False)
    return frame.bytes, frame.more


def recv_rest(sock: zmq.Socket[Any]) -> list[zmq.Frame]:
    """The remaining frames of a message whose last frame received said more follow, as
    ``zmq.Frame`` objects (not copied: bulk data passes through as received)."""
    rest: list[zmq.Frame] = []
    while True:
        frame: zmq.Frame = _recv(sock, 0, False)
        rest.append(frame)
        if not frame.more:
            return rest


# --- the same calls through bus._zmqcalls --------------------------------------------------------

_LIBZMQ_FUNCTIONS = (
    "zmq_getsockopt",
    "zmq_send",
    "zmq_msg_init",
    "zmq_msg_recv",
    "zmq_msg_data",
    "zmq_msg_size",
    "zmq_msg_more",
    "zmq_msg_close",
    "zmq_errno",
)


def _zmqcalls() -> ModuleType | None:
    """``bus._zmqcalls`` pointed at the libzmq pyzmq loaded, or None: not built, turned off by
    ``LINEBUS_PURE_PYTHON``, or a pyzmq whose libzmq cannot be found this way (not the Cython
    backend)."""
    if os.environ.get("LINEBUS_PURE_PYTHON"):
        return None
    try:
        from zmq.backend.cython import _zmq as backend

        from bus import _zmqcalls as calls
    except ImportError:
        return None
    try:
        # dlsym through pyzmq's own extension finds the libzmq it was linked with (bundled or
        # the system's): the one whose sockets these calls are given.
        lib = ctypes.CDLL(backend.__file__)
        addresses = [
            ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0
            for name in _LIBZMQ_FUNCTIONS
        ]
        calls.configure(*addresses)  # refuses a 0 (ValueError)
    except (OSError, AttributeError, ValueError):
        return None
    return calls


def _error(number: int) -> zmq.ZMQError:
    """The exception pyzmq raises for ``number`` (its ``zmq.error._check_rc``)."""
    if number == errno.EAGAIN:
        return zmq.Again(number)
    if number == errno.EINTR:
        return zmq.error.InterruptedSystemCall(number)
    if number == zmq.ETERM:
        return zmq.ContextTerminated(number)
    return zmq.ZMQError(number)


_CALLS = _zmqcalls()


def _send_frames_c(
    sock: zmq.Socket[Any], frames: Sequence[Any], flags: int = NOBLOCK, copy: bool = True
) -> None:
    """``_send_frames_pyzmq`` with its bytes frames sent by ``bus._zmqcalls``."""
    if not flags & NOBLOCK:
        _send_frames_pyzmq(sock, frames, flags, copy)
        return
    assert _CALLS is not None
    c_send = _CALLS.send
    handle = sock.underlying
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        frame_flags = flags if i == last else flags | _SNDMORE
        # bytes copied as pyzmq would copy them; buffers, Frames and zero-copy sends: pyzmq
        if type(frame) is bytes and (copy or len(frame) < _COPY_THRESHOLD):
            if failed := c_send(handle, frame, frame_flags):
                raise _error(failed)
        else:
            _send(sock, frame, frame_flags, copy)


def _send_frame_c(sock: zmq.Socket[Any], frame: bytes, flags: int = NOBLOCK) -> None:
    """``_send_frame_pyzmq`` through ``bus._zmqcalls`` (a bytes frame, without waiting)."""
    if type(frame) is not bytes or not flags & NOBLOCK:
        _send_frame_pyzmq(sock, frame, flags)
        return
    assert _CALLS is not None
    if failed := _CALLS.send(sock.underlying, frame, flags):
        raise _error(failed)


def _events_c(sock: zmq.Socket[Any]) -> int:
    """``_events_pyzmq`` through ``bus._zmqcalls``."""
    assert _CALLS is not None
    value: int = _CALLS.events(sock.underlying)
    if value < 0:
        raise _error(-value)
    return value


def _readable_c(sock: zmq.Socket[Any]) -> bool:
    """``_readable_pyzmq`` through ``bus._zmqcalls``."""
    return bool(_events_c(sock) & _POLLIN)


def _recv_frame_c(sock: zmq.Socket[Any], flags: int = 0) -> tuple[bytes, bool]:
    """``_recv_frame_pyzmq`` through ``bus._zmqcalls`` when ``flags`` has NOBLOCK."""
    if not flags & NOBLOCK:
        return _recv_frame_pyzmq(sock, flags)
    assert _CALLS is not None
    received: tuple[bytes, bool] | int = _CALLS.recv(sock.underlying, flags)
    if type(received) is int:
        raise _error(received)
    return cast(tuple[bytes, bool], received)


if _CALLS is None:
    send_frames, send_frame = _send_frames_pyzmq, _send_frame_pyzmq
    events, readable, recv_frame = _events_pyzmq, _readable_pyzmq, _recv_frame_pyzmq
else:
    send_frames, send_frame = _send_frames_c, _send_frame_c
    events, readable, recv_frame = _events_c, _readable_c, _recv_frame_c
