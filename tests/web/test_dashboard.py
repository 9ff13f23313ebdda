"""The dashboard in a real headless Chromium against the demo line (configs/demo.toml on free
ports under ``linebus up``, which also runs ``linebus web`` from its ``[web]`` table).

Debian's chromium, driven by playwright (PyPI, test extra; never ``playwright install``): one
browser for the module, one page per test, closed in ``finally``; every wait bounded. Each test
saves a screenshot in var/test-output/web/ (git-ignored). The checks read the page's DOM and the
plots' data and canvas pixels, never image diffs (screenshots change with Chromium's versions).
These are ``interop`` tests: without chromium or playwright they skip, and under CI=true that
skip fails (.ci/run installs chromium).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ROOT, DemoLine, Processes, scaled, start_demo_line, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.interop]

CHROMIUM = "/usr/bin/chromium"
#: Where the screenshots go (var/ is git-ignored).
SHOTS = ROOT / "var" / "test-output" / "web"
#: The bound of every wait on the page (milliseconds, playwright's unit), scaled.
WAIT_MS = scaled(15) * 1000

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (the test extra has it)"
)
if shutil.which(CHROMIUM) is None:
    pytest.skip(
        f"{CHROMIUM} is missing (apt-get install chromium; see .ci/run)", allow_module_level=True
    )
expect = sync_api.expect


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoLine, str]]:
    """The demo line and the URL of its dashboard, once it answers."""
    processes = Processes()
    try:
        started = start_demo_line(tmp_path_factory.mktemp("web-demo"), processes)
        url = f"http://{started.config.relocate('127.0.0.1:8750')}/"

        def answers() -> bool:
            try:
                with urllib.request.urlopen(url + "ui/snapshot", timeout=2) as response:
                    return len(json.load(response)["actors"]) >= 7
            except OSError:
                return False

        wait_until(answers, scaled(30), f"the dashboard at {url}")
        yield started, url
    finally:
        processes.cleanup()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, demo: tuple[DemoLine, str], request: pytest.FixtureRequest) -> Iterator[Any]:
    """The dashboard open in a new page; its screenshot saved when the test ends."""
    tab = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        tab.goto(demo[1])
        expect(tab.locator("#connection")).to_have_text("live", timeout=WAIT_MS)
        yield tab
        assert not errors, f"the page's scripts failed: {errors}"
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(SHOTS / f"{request.node.name}.png"), full_page=True)
        tab.close()


def actor_row(page: Any, name: str) -> Any:
    return page.locator(f'#actors tr[data-name="{name}"]')


def test_page_lists_the_line_and_the_simulated_devices(
    page: Any, demo: tuple[DemoLine, str]
) -> None:
    for name, kind in [
        ("echo", "echo"),
        ("fr1", "flashrunner"),
        ("p1", "flux"),
        ("p2", "flux"),
        ("discovery", "discovery"),
        ("telemetry", "telemetry"),
        ("lab", "remotelab"),
    ]:
        row = actor_row(page, name)
        expect(row).to_have_attribute("data-state", "up", timeout=WAIT_MS)
        expect(row.locator("td").nth(1)).to_have_text(kind)
    for printer in ("p1", "p2"):
        device = page.locator(f'#devices tr[data-uuid="{demo[0].uuids[printer]}"]')
        expect(device).to_have_attribute("data-status", "seen", timeout=WAIT_MS)
        expect(device.locator("td").first).to_have_text(printer)
    expect(page.locator("#routed")).not_to_have_text("routed 0", timeout=WAIT_MS)


def test_killed_actor_turns_red_then_back(page: Any, demo: tuple[DemoLine, str]) -> None:
    line = demo[0].line
    row = actor_row(page, "echo")
    expect(row).to_have_attribute("data-state", "up", timeout=WAIT_MS)
    # When the page shows each state of echo's row (browser clock, the same as ours).
    page.evaluate("""() => {
        window.echoStates = [];
        const record = () => {
            const row = document.querySelector('#actors tr[data-name="echo"]');
            const last = window.echoStates.at(-1);
            if (row && (!last || last[0] !== row.dataset.state))
                window.echoStates.push([row.dataset.state, Date.now() / 1000]);
        };
        new MutationObserver(record).observe(document.querySelector('#actors tbody'),
            {childList: true, subtree: true, attributes: true});
    }""")
    with line.client() as bus:
        old = next(r for r in bus.services() if r["name"] == "echo")
        with bus.subscribe("presence.echo") as presence:
            presence.wait_ready()
            os.kill(old["pid"], signal.SIGKILL)
            down = None
            end = time.monotonic() + scaled(15)
            while down is None and time.monotonic() < end:
                event = presence.next(timeout=1.0)
                if event is not None and event.data["state"] == "down":
                    down = time.time()  # when a subscriber of the bus learned it
            assert down is not None, "no presence event of echo going down"
    expect(row).to_have_attribute("data-state", "down", timeout=WAIT_MS)
    expect(row.locator(".badge")).to_have_css("background-color", "rgb(217, 48, 37)")  # red
    expect(row).to_have_attribute(
        "data-state", "up", timeout=WAIT_MS
    )  # the supervisor restarted it
    expect(row.locator("td").nth(4)).to_have_text(str(old["restarts"] + 1), timeout=WAIT_MS)
    states = page.evaluate("window.echoStates")
    shown = next(t for state, t in states if state == "down")
    assert shown - down < scaled(1.0), (
        f"the page showed echo down {shown - down:.2f} s after the bus did"
    )


def _progress_log(page: Any) -> None:
    """Record every job progress bar the page draws (``window.drawn``: [title, value, max])."""
    page.evaluate("""() => {
        window.drawn = [];
        new MutationObserver((records) => {
            // Each render of a job replaces the children of its box (record.target): a
            // render's bar is read from the record even when a later one replaced it.
            for (const record of records) for (const node of record.addedNodes) {
                const bar = node.querySelector && node.querySelector('progress');
                const job = record.target.closest && record.target.closest('.job');
                if (bar && job) window.drawn.push([job.querySelector('.job-title').textContent,
                                                   bar.value, bar.max, job.dataset.id]);
            }
        }).observe(document.querySelector('#jobs'), {childList: true, subtree: true});
    }""")


def test_flashrunner_run_progress_and_channel_3_failed(
    page: Any, demo: tuple[DemoLine, str]
) -> None:
    _progress_log(page)
    image = os.urandom(12 << 20)  # long enough (about a second) for progress events in between
    errors: list[BaseException] = []

    def flash() -> None:
        try:
            with demo[0].line.client(timeout=60) as bus:
                bus.call("fr1", "FR_SendFile", name="app.frb", data=image, file_type="FRB")
                bus.call("fr1", "FR_SendFile", name="demo.prj", data=b"; demo\n", file_type="PRJ")
                bus.call(
                    "fr1",
                    "FR_RunProject",
                    {"project": "demo.prj", "channels": [1, 2, 3, 4], "timeout": 30000},
                )
        except BaseException as exc:  # shown by the test's thread
            errors.append(exc)

    worker = threading.Thread(target=flash, daemon=True)
    worker.start()
    run = page.locator(".job", has_text="FR_RunProject")
    expect(run.locator(".outcome")).to_have_text("failed: channel 3", timeout=WAIT_MS)
    expect(run.locator('.channel[data-channel="3"]')).to_have_text("ch 3 failed")
    expect(run.locator(".channel.passed")).to_have_count(3)
    worker.join(scaled(30))
    assert not worker.is_alive() and not errors, errors
    drawn = page.evaluate("window.drawn")
    transfer = [
        (value, top) for text, value, top, _ in drawn if "FR_SendFile" in text and top == len(image)
    ]
    assert any(0 < value < top for value, top in transfer), f"no bar in between: {transfer}"
    assert transfer[-1] == (len(image), len(image))
    runs = [(value, top) for text, value, top, _ in drawn if "FR_RunProject" in text and top == 4]
    assert runs[0] == (0, 4) and runs[-1] == (4, 4), runs  # the run's bar moved from 0 to 4 of 4


def _plot_points(page: Any, key: str) -> int:
    return int(
        page.evaluate(
            "(key) => window.linebus.state.streams.get(key)?.plot?.data[0].length ?? 0", key
        )
    )


def test_telemetry_plot_draws_new_points(page: Any, demo: tuple[DemoLine, str]) -> None:
    stream = f"press-{os.getpid()}"
    key = f"telemetry/default/{stream}"

    def enqueue(count: int, start: int) -> None:
        with demo[0].line.client() as bus:
            for i in range(start, start + count):
                reading = {"temp_c": 20 + i % 7, "rpm": 1000 + 25 * i}
                bus.call(
                    "telemetry",
                    "enqueue_message",
                    payload=json.dumps(reading).encode(),
                    stream=stream,
                )

    enqueue(5, 0)
    page.wait_for_function(
        "(key) => (window.linebus.state.streams.get(key)?.plot?.data[0].length ?? 0) >= 5",
        arg=key,
        timeout=WAIT_MS,
    )
    assert page.evaluate(
        "(key) => window.linebus.state.streams.get(key).plot.series.map(s => s.label)", key
    )[1:] == ["rpm", "temp_c"]
    before = _plot_points(page, key)
    enqueue(5, 5)
    page.wait_for_function(
        "([key, n]) => window.linebus.state.streams.get(key).plot.data[0].length > n",
        arg=[key, before],
        timeout=WAIT_MS,
    )
    painted = page.evaluate(
        """(key) => {
        const box = document.querySelector(`.plot-box[data-stream="${key}"] canvas`);
        const d = box.getContext('2d').getImageData(0, 0, box.width, box.height).data;
        let k = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) k++; return k; }""",
        key,
    )
    assert painted > 500, f"the plot's canvas has {painted} painted pixels"
    # Paused, the plot keeps its points while readings still arrive; resumed, it takes them.
    page.click("#pause")
    shown = _plot_points(page, key)
    enqueue(3, 10)
    page.wait_for_function(
        "([key, n]) => window.linebus.state.streams.get(key).points.length >= n",
        arg=[key, shown + 3],
        timeout=WAIT_MS,
    )
    assert _plot_points(page, key) == shown
    page.click("#pause")
    page.wait_for_function(
        "([key, n]) => window.linebus.state.streams.get(key).plot.data[0].length >= n",
        arg=[key, shown + 3],
        timeout=WAIT_MS,
    )
    # Zoom: a drag across the plot narrows its time axis; a double-click zooms out again.
    over = page.locator(f'.plot-box[data-stream="{key}"] .u-over')
    box = over.bounding_box()
    assert box is not None
    full = page.evaluate(
        "(key) => { const x = window.linebus.state.streams.get(key).plot.scales.x;"
        " return x.max - x.min; }",
        key,
    )
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    zoomed = page.evaluate(
        "(key) => { const x = window.linebus.state.streams.get(key).plot.scales.x;"
        " return x.max - x.min; }",
        key,
    )
    assert zoomed < full * 0.5, (zoomed, full)
    over.dblclick()
    page.wait_for_function(
        "(key) => !window.linebus.state.streams.get(key).zoomed", arg=key, timeout=WAIT_MS
    )


def test_console_call_result_and_typed_error(page: Any) -> None:
    page.select_option("#service", "echo")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#command option')].some(o => o.value === 'add')",
        timeout=WAIT_MS,
    )
    page.select_option("#command", "add")
    expect(page.locator("#command-doc")).to_contain_text("Return ``a + b``")
    expect(page.locator('#args input[name="b"]')).to_have_value("0")  # the default, from describe
    page.fill('#args input[name="a"]', "2")
    page.fill('#args input[name="b"]', "40")
    page.click("#call")
    expect(page.locator("#call-result")).to_have_text("42", timeout=WAIT_MS)
    page.fill('#args input[name="a"]', '"two"')
    page.click("#call")
    error = page.locator("#call-error")
    expect(error).to_have_attribute("data-code", "invalid_arguments", timeout=WAIT_MS)
    expect(error).to_contain_text("'a'")
    expect(page.locator("#call-result")).to_be_hidden()
    # A command that reports progress: the bar shows, then the result.
    page.select_option("#command", "work")
    page.fill('#args input[name="steps"]', "4")
    page.fill('#args input[name="step_s"]', "0.3")
    page.click("#call")
    expect(page.locator("#call-progress")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#call-result")).to_contain_text('"steps": 4', timeout=WAIT_MS)
