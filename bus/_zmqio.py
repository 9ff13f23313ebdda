"""Frame I/O on pyzmq sockets for the hot paths, without pyzmq's Python layer.

pyzmq's ``zmq.Socket`` is a Python subclass (``zmq.sugar``) of its Cython socket. Its ``send``,
``send_multipart`` and ``recv_multipart`` add Python work to every frame (keyword handling,
buffer checks per part, option values turned into ``IntEnum`` members), and ending a drain loop
on ``zmq.Again`` builds an exception (two ``__init__``, an import, a strerror) per wake-up. On
the broker's routing loop that was about a third of its Python time per message. These helpers
call the Cython methods directly and ask ``ZMQ_EVENTS`` instead of provoking EAGAIN; they behave
as the sugar methods do (the same errors: ``zmq.Again`` on a full queue, ``EHOSTUNREACH`` from a
ROUTER_MANDATORY socket...).

Only pyzmq is imported: the client core uses this module too (tests/unit/test_client_imports.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import zmq
from zmq.backend import Socket as _CSocket

__all__ = ["NOBLOCK", "events", "readable", "recv_frame", "recv_rest", "send_frame", "send_frames"]

NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_send = _CSocket.send
_recv = _CSocket.recv
_get = _CSocket.get


def send_frames(
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


def send_frame(sock: zmq.Socket[Any], frame: bytes, flags: int = NOBLOCK) -> None:
    """``sock.send(frame, flags)``: one frame, copied (half the cost of pyzmq's ``send`` for a
    small frame; an actor publishes each event this way)."""
    _send(sock, frame, flags, True)


def events(sock: zmq.Socket[Any]) -> int:
    """``ZMQ_EVENTS`` of ``sock`` as a plain int (``zmq.POLLIN`` and ``zmq.POLLOUT`` bits)."""
    return cast(int, _get(sock, _EVENTS))


def readable(sock: zmq.Socket[Any]) -> bool:
    """Whether a message is waiting in ``sock`` (``ZMQ_EVENTS`` has POLLIN): what a drain loop
    asks before each receive, instead of ending on ``zmq.Again``."""
    # An int option; pyzmq's stubs type every get() as int | bytes.
    return bool(cast(int, _get(sock, _EVENTS)) & _POLLIN)


def recv_frame(sock: zmq.Socket[Any], flags: int = 0) -> tuple[bytes, bool]:
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
