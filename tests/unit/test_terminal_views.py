"""What ``linebus`` draws, in process: the progress of a call on a terminal and in a pipe (with a
fake clock), the aligned tables, and ``linebus top``'s view of a line from its inputs.

``--json`` progress and the tables of a live broker are in tests/unit/test_cli_inproc.py; the
commands as subprocesses against a real line in tests/integration/test_terminal.py.
"""

from __future__ import annotations

import io
import re

import pytest

from bus.terminal.progress import (
    BarProgress,
    Estimate,
    LineProgress,
    format_duration,
    format_fields,
    progress_view,
)
from bus.terminal.tables import print_renderable, print_stats, print_table, services_table
from bus.terminal.top import render
from bus.terminal.topstate import KEEP_ENDED_S, TopState

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestProgressLines:
    def test_a_climbing_count_prints_at_most_a_line_a_second_and_always_the_last(self) -> None:
        clock, out = FakeClock(), io.StringIO()
        view = LineProgress(out, clock)
        for done in range(0, 101, 5):  # 100 units in 2 s: 50 a second
            view.update({"done": done, "total": 100, "channel": 3})
            clock.now += 0.1
        view.close()
        assert out.getvalue().splitlines() == [
            "progress 0/100 0% -/s -:-- left channel=3",
            "progress 50/100 50% 50.0/s 0:01 left channel=3",
            "progress 100/100 100% 50.0/s 0:00 left channel=3",
        ]

    def test_a_count_that_stops_short_prints_its_last_update_on_close(self) -> None:
        clock, out = FakeClock(), io.StringIO()
        view = LineProgress(out, clock)
        view.update({"done": 1, "total": 4})
        clock.now += 0.5
        view.update({"done": 2, "total": 4})
        assert len(out.getvalue().splitlines()) == 1
        view.close()
        assert out.getvalue().splitlines()[-1] == "progress 2/4 50% 2.0/s 0:01 left"

    def test_updates_without_numbers_are_their_fields(self) -> None:
        out = io.StringIO()
        view = LineProgress(out, FakeClock())
        view.update({"message": "heating nozzle", "status": "RUNNING", "data": b"\x00\x01"})
        view.update("plain text")
        view.update({"done": "x", "total": 3})  # not numbers: printed as fields
        assert out.getvalue().splitlines() == [
            'progress message="heating nozzle" status=RUNNING data="<2 bytes>"',
            'progress "plain text"',
            "progress done=x total=3",
        ]


class TestProgressBar:
    def test_bar_with_rate_and_time_left_redrawn_at_most_ten_times_a_second(self) -> None:
        clock, out = FakeClock(), io.StringIO()
        view = BarProgress("fr1 run", out, clock, width=120)
        for done in range(0, 1001, 10):  # 100 updates in 1 s
            view.update({"done": done, "total": 1000})
            clock.now += 0.01
        view.close()
        frames = [ANSI.sub("", f) for f in out.getvalue().split("\r") if "fr1 run" in f]
        assert 8 <= len(frames) <= 14  # ~10 redraws, the last and the one of close
        last = " ".join(frames[-1].split())
        assert re.fullmatch(r"fr1 run ━+ 100% 1000/1000 1\.0k/s 0:00 left", last), last
        middle = " ".join(frames[len(frames) // 2].split())
        assert re.search(r" \d\d% \d+/1000 1\.0k/s 0:0\d left", middle), middle

    def test_a_message_is_printed_above_the_bar(self) -> None:
        clock, out = FakeClock(), io.StringIO()
        view = BarProgress("p1 start", out, clock, width=100)
        view.update({"done": 1, "total": 2})
        view.update({"message": "[bed] heating"})  # not rich markup: printed as it is
        view.close()
        assert 'progress message="[bed] heating"' in ANSI.sub("", out.getvalue())

    def test_a_terminal_gets_the_bar_a_pipe_the_lines(self) -> None:
        assert isinstance(progress_view("x y", out=io.StringIO(), tty=True), BarProgress)
        assert isinstance(progress_view("x y", out=io.StringIO(), tty=False), LineProgress)
        assert isinstance(progress_view("x y", out=io.StringIO()), LineProgress)  # no tty


class TestFormats:
    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(None, "-:--"), (-1, "-:--"), (0.4, "0:00"), (75, "1:15"), (3725, "1:02:05")],
    )
    def test_duration(self, seconds: float | None, text: str) -> None:
        assert format_duration(seconds) == text

    def test_estimate_follows_the_recent_pace_and_restarts_when_the_count_goes_back(self) -> None:
        clock = FakeClock()
        estimate = Estimate(clock)
        estimate.add(0)
        assert estimate.rate is None and estimate.left_s(0, 10) is None
        clock.now += 2
        estimate.add(10)
        assert estimate.rate == 5.0 and estimate.left_s(10, 20) == 2.0
        clock.now += 1
        estimate.add(3)  # a new channel starts from 0
        assert estimate.rate is None

    def test_fields(self) -> None:
        assert format_fields({"done": 1, "total": 2, "ok": True, "n": None}) == "ok=true n=null"


class TestTables:
    def test_services_with_restarts_and_without(self) -> None:
        row = {"name": "fr1", "kind": "flashrunner", "state": "up", "since": 990.0, "pid": 7}
        headers, cells = services_table([{**row, "restarts": 2}], now=1000.0)
        assert headers == ["NAME", "KIND", "STATE", "SINCE", "RESTARTS", "PID"]
        assert cells[0][-2:] == [2, 7] and cells[0][3].endswith("(10s ago)")
        headers, cells = services_table([row], now=1000.0)  # an older broker: no column
        assert "RESTARTS" not in headers and len(cells[0]) == 5

    def test_columns_align_and_numbers_go_right(self) -> None:
        out = io.StringIO()
        print_table(["NAME", "N"], [["a", 1], ["longer", 100], ["c", None]], out=out, tty=False)
        assert out.getvalue().splitlines() == [
            "NAME      N",
            "a         1",
            "longer  100",
            "c         -",
        ]

    def test_stats_show_keys_this_version_does_not_know(self) -> None:
        out = io.StringIO()
        print_stats(
            {"uptime_s": 1.5, "routed": {"request": 3}, "latency": {"p99_ms": 1.25}, "x": []},
            out=out,
            tty=False,
        )
        text = out.getvalue()
        assert (
            "BROKER    VALUE\nuptime_s    1.5" in text and "LATENCY  VALUE\np99_ms    1.25" in text
        )
        assert "X\nnone" in text


class TestTop:
    """``linebus top``'s state and frame from given inputs (the loop: integration tests)."""

    ROWS = (
        {"name": "echo1", "kind": "echo", "state": "up", "since": 900.0, "pid": 11, "restarts": 1},
        {"name": "fr1", "kind": "flashrunner", "state": "up", "since": 400.0, "pid": 12},
    )

    def frame(self, state: TopState) -> list[str]:
        out = io.StringIO()
        print_renderable(render(state, endpoint="tcp://x:1", tty=False, now_wall=1000.0), out=out)
        return out.getvalue().splitlines()

    def test_a_frame_shows_the_broker_the_actors_and_the_jobs(self) -> None:
        clock = FakeClock()
        state = TopState(clock=clock)
        state.on_services([dict(r) for r in self.ROWS])
        state.on_stats({"uptime_s": 65, "routed": {"request": 10}, "dropped": {}, "inflight": 1})
        clock.now += 2
        state.on_stats(
            {"uptime_s": 67, "routed": {"request": 30}, "dropped": {"busy": 1}, "inflight": 1}
        )
        state.on_job("fr1", {"job": "j1", "command": "run", "state": "started", "elapsed_s": 0})
        for done in (10, 30):
            clock.now += 1
            state.on_job(
                "fr1",
                {"job": "j1", "command": "run", "state": "progress", "elapsed_s": 1,
                 "progress": {"done": done, "total": 100, "channel": 2}},
            )  # fmt: skip
        header, rates, _, actors, echo1, fr1, _, jobs, job = self.frame(state)
        assert header == "linebus top  tcp://x:1  broker up 1:07  services 2 up / 2"
        assert rates.startswith("requests 10.0/s  replies 0.0/s") and "dropped 0.5/s" in rates
        assert actors.split() == ["NAME", "KIND", "STATE", "UPTIME", "RESTARTS", "PID"]
        assert echo1.split() == ["echo1", "echo", "up", "1:40", "1", "11"]
        assert fr1.split() == ["fr1", "flashrunner", "up", "10:00", "-", "12"]  # no restarts key
        assert jobs.split() == ["SERVICE", "COMMAND", "PROGRESS", "DONE", "RATE", "LEFT", "TIME"]
        assert job.split() == [
            "fr1", "run", "######..............", "30%", "30/100", "20.0/s", "0:04", "0:02",
            "channel=2",
        ]  # fmt: skip

    def test_an_ended_job_shows_its_outcome_for_a_while_and_a_lost_actor_ends_its_job(
        self,
    ) -> None:
        clock = FakeClock()
        state = TopState(clock=clock)
        state.on_services([dict(r) for r in self.ROWS])
        base = {"command": "run", "elapsed_s": 0}
        state.on_job("echo1", {**base, "job": "a", "state": "started"})
        state.on_job("fr1", {**base, "job": "b", "state": "started"})
        state.on_job("echo1", {**base, "job": "a", "state": "ended", "outcome": "error",
                               "code": "device_fault", "duration_s": 2.0})  # fmt: skip
        assert [(j.job, j.outcome) for j in state.jobs()] == [("b", None), ("a", "error")]
        assert self.frame(state)[-1].split() == ["echo1", "run", "0:02", "error", "device_fault"]
        state.on_services([dict(self.ROWS[0]), {**self.ROWS[1], "state": "down"}])
        assert [(j.job, j.outcome) for j in state.jobs()] == [("a", "error"), ("b", "lost")]
        clock.now += KEEP_ENDED_S + 1
        assert state.jobs() == []
        state.on_job("fr1", ["not", "a", "map"])  # ignored
        state.on_job("fr1", {"state": "started"})  # no job id: ignored
        assert state.jobs() == []
        assert self.frame(state)[-1].split() == ["no", "jobs", "running"]
