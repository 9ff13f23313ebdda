"""bus.testing.wait_until / async_wait_until: the one way tests, benchmarks and the demo wait."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from bus.errors import Unavailable
from bus.testing import WaitTimeout, async_wait_until, wait_until


def test_returns_the_first_true_value() -> None:
    """The predicate's first true value is returned, as soon as it comes."""
    values = iter([None, 0, {}, {"row": 1}, {"row": 2}])
    assert wait_until(lambda: next(values), 5, "a row", interval=0) == {"row": 1}


def test_true_at_once_does_not_sleep() -> None:
    """A condition already true returns without a pause."""
    started = time.monotonic()
    assert wait_until(lambda: True, 5, "nothing", interval=1.0) is True
    assert time.monotonic() - started < 0.5


def test_timeout_names_what_and_the_last_value() -> None:
    """After the timeout: a WaitTimeout (an AssertionError) saying what and the last value."""
    calls = itertools.count()
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as info:
        wait_until(lambda: next(calls) * 0, 0.1, "the answer", interval=0.01)
    assert time.monotonic() - started >= 0.1
    assert isinstance(info.value, AssertionError)
    assert str(info.value) == "timed out after 0.1 s waiting for the answer; last value: 0"


def test_what_may_describe_the_state_at_the_time_of_the_error() -> None:
    """A callable ``what`` is asked when the wait fails, so it can say what was seen."""
    seen: list[int] = []

    def nothing_yet() -> bool:
        seen.append(len(seen))
        return False

    with pytest.raises(WaitTimeout, match=r"waiting for 3 \(saw \d+ values\)"):
        wait_until(nothing_yet, 0.05, lambda: f"3 (saw {len(seen)} values)", interval=0.01)


def test_ignored_exceptions_count_as_not_yet() -> None:
    """An exception listed in ``ignore`` means "not yet"; others propagate at once."""
    attempts = itertools.count()

    def recovering() -> str:
        if next(attempts) < 3:
            raise Unavailable("broker restarting")
        return "up"

    assert wait_until(recovering, 5, "recovery", interval=0, ignore=(Unavailable,)) == "up"
    with pytest.raises(ZeroDivisionError):
        wait_until(lambda: 1 / 0, 5, "a bug", ignore=(Unavailable,))


def test_an_ignored_exception_is_the_last_value_shown() -> None:
    """If the predicate keeps failing, the error shows the exception it raised."""

    def down() -> bool:
        raise Unavailable("still down")

    with pytest.raises(WaitTimeout, match="still down"):
        wait_until(down, 0.05, "the broker", interval=0.01, ignore=(Unavailable,))


async def test_async_variant_lets_the_loop_run() -> None:
    """``async_wait_until`` pauses with asyncio.sleep: a task on the loop makes it true."""
    flag: list[bool] = []

    async def set_later() -> None:
        await asyncio.sleep(0.02)
        flag.append(True)

    task = asyncio.create_task(set_later())
    assert await async_wait_until(lambda: bool(flag), 5, "the flag") is True
    await task


async def test_async_variant_times_out_with_a_message() -> None:
    """The async variant fails the same way."""
    with pytest.raises(WaitTimeout, match="waiting for never; last value: False"):
        await async_wait_until(lambda: False, 0.05, "never")
