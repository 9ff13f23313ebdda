"""A process's CPU priority from the line's config (bus.priority): ``nice`` in ``[broker]`` and
``[[actor]]``, on every thread of the real processes."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import ECHO, Endpoints, Line, Processes, write_config


def thread_nice_values(pid: int) -> dict[str, int]:
    """Each thread's nice value, by thread id (Linux keeps one per thread, and getpriority of
    a thread id gives that thread's)."""
    return {
        task.name: os.getpriority(os.PRIO_PROCESS, int(task.name))
        for task in Path(f"/proc/{pid}/task").iterdir()
    }


def test_broker_and_actor_take_their_nice_values(tmp_path: Path, processes: Processes) -> None:
    """The broker and an actor run every thread (ZeroMQ's I/O threads included) at the nice
    value of their config tables; an actor without one keeps the value it was started with."""
    endpoints = Endpoints.fresh()
    config = write_config(
        tmp_path / "line.toml",
        endpoints,
        [{"name": "low", **ECHO, "nice": 18}, {"name": "plain", **ECHO}],
        broker={"nice": 17},
    )
    line = Line(config, endpoints, processes)
    broker = line.start_broker()
    low = line.start_actor("low")
    plain = line.start_actor("plain")
    with line.client() as client:
        assert client.call("low", "echo", value=1) == 1  # the line works as before

    broker_threads = thread_nice_values(broker.pid)
    assert len(broker_threads) > 1  # the I/O threads, started after the value was set
    assert set(broker_threads.values()) == {17}
    low_threads = thread_nice_values(low.pid)
    assert len(low_threads) > 1
    assert set(low_threads.values()) == {18}
    assert set(thread_nice_values(plain.pid).values()) == {os.getpriority(os.PRIO_PROCESS, 0)}
