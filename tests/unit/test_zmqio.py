"""bus._zmqio: the hot paths' frame I/O behaves as pyzmq's send_multipart/recv_multipart do,
through pyzmq and through bus._zmqcalls (libzmq called directly) alike: the same frames, the
same flags, the same exceptions."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import zmq

from bus import _zmqio

Pair = tuple[zmq.Socket[Any], zmq.Socket[Any]]


@pytest.fixture(params=["zmqcalls", "pyzmq"])
def io(request: pytest.FixtureRequest) -> SimpleNamespace:
    """The module's functions on one path: C (bus/_zmqcalls.c) or pyzmq."""
    if request.param == "zmqcalls" and _zmqio._CALLS is None:
        reason = "bus._zmqcalls was not built (no C compiler when linebus was installed?)"
        if os.environ.get("CI") and not os.environ.get("LINEBUS_PURE_PYTHON"):
            pytest.fail(reason)  # .ci/run installs gcc: the C path must be tested there
        pytest.skip(reason)
    suffix = "_c" if request.param == "zmqcalls" else "_pyzmq"
    names = ("send_frames", "send_frame", "events", "readable", "recv_frame")
    functions = {name: getattr(_zmqio, f"_{name}{suffix}") for name in names}
    return SimpleNamespace(**functions, recv_rest=_zmqio.recv_rest)


@pytest.fixture
def pair() -> Iterator[Pair]:
    ctx: zmq.Context[zmq.Socket[Any]] = zmq.Context()
    a = ctx.socket(zmq.PAIR)
    b = ctx.socket(zmq.PAIR)
    a.bind("inproc://zmqio")
    b.connect("inproc://zmqio")
    yield a, b
    a.close(linger=0)
    b.close(linger=0)
    ctx.term()


def test_the_c_path_is_the_default_when_built() -> None:
    if _zmqio._CALLS is None:
        assert _zmqio.readable is _zmqio._readable_pyzmq
    else:
        assert _zmqio.readable is _zmqio._readable_c
        assert _zmqio.send_frames is _zmqio._send_frames_c


class TestFrames:
    def test_multipart_round_trip(self, io: SimpleNamespace, pair: Pair) -> None:
        """Three frames (bytes, a Frame, a memoryview sent without copying) arrive as sent, in
        one message: the first as bytes with ``more``, the rest as Frames, the last without."""
        a, b = pair
        big = bytes(range(256)) * 1024
        io.send_frames(a, [b"id", zmq.Frame(b"header"), memoryview(big)], copy=False)
        assert io.readable(b)
        assert io.events(b) & zmq.POLLIN
        assert io.recv_frame(b, zmq.NOBLOCK) == (b"id", True)
        rest = io.recv_rest(b)
        assert [bytes(f.buffer) for f in rest] == [b"header", big]
        assert not io.readable(b)

    def test_single_frame_has_no_more(self, io: SimpleNamespace, pair: Pair) -> None:
        a, b = pair
        io.send_frames(a, [b"only"])
        assert io.recv_frame(b, zmq.NOBLOCK) == (b"only", False)
        assert not io.readable(b)

    def test_large_bytes_without_copy_and_empty_frames(
        self, io: SimpleNamespace, pair: Pair
    ) -> None:
        """Bytes above pyzmq's copy threshold sent with copy=False (pyzmq's zero-copy path),
        and empty frames, arrive whole."""
        a, b = pair
        big = b"\x5a" * (zmq.COPY_THRESHOLD * 2)
        io.send_frames(a, [b"", big, b""], copy=False)
        assert io.recv_frame(b, zmq.NOBLOCK) == (b"", True)
        assert [bytes(f.buffer) for f in io.recv_rest(b)] == [big, b""]

    def test_one_frame_and_a_blocking_receive(self, io: SimpleNamespace, pair: Pair) -> None:
        """send_frame, and a receive without NOBLOCK (which waits, so it goes through pyzmq)."""
        a, b = pair
        io.send_frame(a, b"event")
        io.send_frame(a, bytearray(b"buffer"))  # not bytes: pyzmq's path takes any buffer
        assert io.recv_frame(b) == (b"event", False)
        assert io.recv_frame(b, 0) == (b"buffer", False)
        assert io.events(b) & zmq.POLLOUT and not io.events(b) & zmq.POLLIN


class TestErrors:
    def test_full_queue_raises_again(self, io: SimpleNamespace) -> None:
        """With NOBLOCK a message that cannot be queued raises zmq.Again, as send_multipart."""
        ctx: zmq.Context[zmq.Socket[Any]] = zmq.Context()
        sock = ctx.socket(zmq.DEALER)  # never connected: nowhere to queue
        try:
            with pytest.raises(zmq.Again):
                io.send_frames(sock, [b"a", b"b"])
            with pytest.raises(zmq.Again):
                io.send_frame(sock, b"a")
        finally:
            sock.close(linger=0)
            ctx.term()

    def test_nothing_to_receive_raises_again(self, io: SimpleNamespace, pair: Pair) -> None:
        _, b = pair
        with pytest.raises(zmq.Again):
            io.recv_frame(b, zmq.NOBLOCK)

    def test_closed_socket_raises_enotsock(self, io: SimpleNamespace) -> None:
        """A closed socket is refused with ENOTSOCK, as pyzmq refuses it (never a crash: its
        handle is gone)."""
        ctx: zmq.Context[zmq.Socket[Any]] = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.close(linger=0)
        try:
            for call in (
                lambda: io.send_frames(sock, [b"a"]),
                lambda: io.send_frame(sock, b"a"),
                lambda: io.readable(sock),
                lambda: io.events(sock),
                lambda: io.recv_frame(sock, zmq.NOBLOCK),
            ):
                with pytest.raises(zmq.ZMQError) as caught:
                    call()
                assert caught.value.errno == zmq.ENOTSOCK
        finally:
            ctx.term()

    def test_a_routers_unknown_peer_is_ehostunreach(self, io: SimpleNamespace) -> None:
        """ROUTER_MANDATORY's refusal comes through as the same ZMQError."""
        ctx: zmq.Context[zmq.Socket[Any]] = zmq.Context()
        router = ctx.socket(zmq.ROUTER)
        router.router_mandatory = True
        try:
            with pytest.raises(zmq.ZMQError) as caught:
                io.send_frames(router, [b"nobody", b"body"])
            assert caught.value.errno == zmq.EHOSTUNREACH
        finally:
            router.close(linger=0)
            ctx.term()


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        (errno.EAGAIN, zmq.Again),
        (errno.EINTR, zmq.error.InterruptedSystemCall),
        (zmq.ETERM, zmq.ContextTerminated),
        (zmq.EHOSTUNREACH, zmq.ZMQError),
    ],
)
def test_errors_are_pyzmqs_classes(number: int, kind: type[zmq.ZMQError]) -> None:
    error = _zmqio._error(number)
    assert type(error) is kind and error.errno == number


def test_the_c_calls_make_no_blocking_call() -> None:
    """A blocking call must release the GIL and retry after signals: the C module refuses it
    (the wrappers send it to pyzmq instead)."""
    if _zmqio._CALLS is None:
        pytest.skip("bus._zmqcalls was not built")
    with pytest.raises(ValueError, match="non-blocking calls only"):
        _zmqio._CALLS.recv(1, 0)
    with pytest.raises(TypeError, match="data: bytes"):
        _zmqio._CALLS.send(1, bytearray(b"x"), zmq.NOBLOCK)
