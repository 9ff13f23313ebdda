"""bus._zmqio: the hot paths' frame I/O behaves as pyzmq's send_multipart/recv_multipart do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from bus._zmqio import readable, recv_frame, recv_rest, send_frames


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[zmq.Socket[Any], zmq.Socket[Any]]]:
    ctx: zmq.Context[zmq.Socket[Any]] = zmq.Context()
    a = ctx.socket(zmq.PAIR)
    b = ctx.socket(zmq.PAIR)
    a.bind("inproc://zmqio")
    b.connect("inproc://zmqio")
    yield a, b
    a.close(linger=0)
    b.close(linger=0)
    ctx.term()


class TestFrames:
    def test_multipart_round_trip(self, pair: tuple[zmq.Socket[Any], zmq.Socket[Any]]) -> None:
        """Three frames (bytes, a Frame, a memoryview sent without copying) arrive as sent, in
        one message: the first as bytes with ``more``, the rest as Frames, the last without."""
        a, b = pair
        big = bytes(range(256)) * 1024
        send_frames(a, [b"id", zmq.Frame(b"header"), memoryview(big)], copy=False)
        assert readable(b)
        assert recv_frame(b) == (b"id", True)
        rest = recv_rest(b)
        assert [bytes(f.buffer) for f in rest] == [b"header", big]
        assert not readable(b)

    def test_single_frame_has_no_more(self, pair: tuple[zmq.Socket[Any], zmq.Socket[Any]]) -> None:
        a, b = pair
        send_frames(a, [b"only"])
        assert recv_frame(b) == (b"only", False)
        assert not readable(b)

    def test_full_queue_raises_again(self) -> None:
        """With NOBLOCK a message that cannot be queued raises zmq.Again, as send_multipart."""
        ctx: zmq.Context[zmq.Socket[Any]] = zmq.Context()
        sock = ctx.socket(zmq.DEALER)  # never connected: nowhere to queue
        try:
            with pytest.raises(zmq.Again):
                send_frames(sock, [b"a", b"b"])
        finally:
            sock.close(linger=0)
            ctx.term()
