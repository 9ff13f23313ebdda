"""The broker survives whatever arrives on its command socket."""

from __future__ import annotations

import random

import msgpack
import pytest
import zmq

from tests.conftest import scaled, secure_socket

pytestmark = pytest.mark.integration


def _odd_value(rng: random.Random, depth: int = 0) -> object:
    choices = [None, True, 1, -5, 2**40, 1.5, float("nan"), "x", b"\x00\x01", [], {}]
    if depth < 2:
        choices += [
            [_odd_value(rng, depth + 1) for _ in range(rng.randint(0, 4))],
            {rng.choice([1, "k", b"b"]): _odd_value(rng, depth + 1)},
        ]
    return rng.choice(choices)


def _odd_frames(rng: random.Random) -> list[bytes]:
    roll = rng.random()
    if roll < 0.25:
        return [rng.randbytes(rng.randint(0, 40))]
    header = [rng.choice([1, 1, 1, 2, True, 1.0]), rng.choice([*range(12), True, "1"])]
    header += [_odd_value(rng) for _ in range(rng.randint(0, 7))]
    frames = [msgpack.packb(header, use_bin_type=True)]
    if roll > 0.8:
        frames.append(rng.randbytes(10))
    return frames


def test_broker_survives_malformed_and_odd_messages(running_line):
    """600 malformed or odd messages (random bytes, wrong types, non-string map keys, bad
    versions and kinds) leave the broker serving, and it answers each it can with an error."""
    rng = random.Random(20261121)
    sock = secure_socket(zmq.Context.instance().socket(zmq.DEALER))
    sock.linger = 0
    sock.connect(running_line.endpoints.command)
    try:
        for _ in range(600):
            sock.send_multipart(_odd_frames(rng))
        with running_line.client() as bus:
            assert bus.ping(timeout=scaled(5))["pong"] is True
            assert bus.call("echo1", "add", a=1, b=2) == 3
            dropped = bus.stats()["dropped"]
        assert sum(dropped.values()) > 0
        answers = 0
        while sock.poll(200):
            header = msgpack.unpackb(sock.recv_multipart()[0], strict_map_key=False)
            answers += 1
            assert header[1] in (3, 4, 7, 8, 10), (
                header
            )  # reply, error, heartbeat, disconnect, hello
        assert answers > 0
    finally:
        sock.close(linger=0)


def test_non_string_map_key_in_ready_does_not_stop_the_broker(running_line):
    """Regression: a READY whose info map has an integer key stopped the broker."""
    sock = secure_socket(zmq.Context.instance().socket(zmq.DEALER))
    sock.linger = 0
    sock.connect(running_line.endpoints.command)
    try:
        sock.send(msgpack.packb([1, 6, "odd-keys", {1: 2}]))
        with running_line.client() as bus:
            assert bus.ping(timeout=scaled(5))["pong"] is True
    finally:
        sock.close(linger=0)
