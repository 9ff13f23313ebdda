"""The dashboard page's live data (``/ui/*``); the page itself is ``static/index.html``.

- ``GET /ui/snapshot``: the line's whole state as JSON (``LineView.snapshot``);
- ``GET /ui/stream``: Server-Sent Events: a ``snapshot`` event first, then ``changes`` events,
  each a JSON list of the changes since the previous one (sent at most every
  ``BATCH_S`` seconds, so a burst of events costs a few messages, not one each); a new
  ``snapshot`` when this page fell too far behind. A comment line every ``KEEPALIVE_S`` keeps
  idle proxies from closing it.

One ``LineView`` per app follows the line through the app's own bus connection (``background``
runs it for the app's lifetime); every open page watches it. The console of the page calls
through the gateway (``/api/call/...``) with the token the user gives, not through here: the
dashboard's own connection is used only to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bus.web.lineview import LineView
from bus.web.state import WebState

__all__ = ["BATCH_S", "KEEPALIVE_S", "background", "routes"]

#: The shortest time between two ``changes`` messages to one page (presence shows well within
#: a second).
BATCH_S = 0.2
#: Seconds of silence after which the stream sends a comment line.
KEEPALIVE_S = 15.0

#: The running view of each app's state, by ``id(state)`` (``WebState`` has slots and no weak
#: references; ``background`` removes its entry when the app stops).
_VIEWS: dict[int, LineView] = {}


def routes(state: WebState) -> list[BaseRoute]:
    """The page's data routes (``/`` is the app's static mount: ``static/index.html``)."""

    def view() -> LineView:
        found = _VIEWS.get(id(state))
        if found is None:  # outside the app's lifespan: nothing follows the line
            raise RuntimeError("the dashboard's line view is not running")
        return found

    async def snapshot(request: Request) -> Response:
        return JSONResponse(view().snapshot())

    async def stream(request: Request) -> Response:
        return StreamingResponse(
            _stream(view(), request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return [Route("/ui/snapshot", snapshot), Route("/ui/stream", stream)]


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _stream(view: LineView, request: Request) -> AsyncIterator[str]:
    watcher = view.watch()
    try:
        yield _sse("snapshot", view.snapshot())
        quiet_since = time.monotonic()
        while not await request.is_disconnected():
            batch = await watcher.next_batch(1.0)
            if batch is None:
                yield _sse("snapshot", view.snapshot())
            elif batch:
                yield _sse("changes", batch)
            elif time.monotonic() - quiet_since < KEEPALIVE_S:
                continue
            else:
                yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
            await asyncio.sleep(BATCH_S)  # let changes gather into the next batch
    finally:
        watcher.close()


def background(state: WebState) -> contextlib.AbstractAsyncContextManager[Any]:
    """Follow the line with a ``LineView`` while the app runs."""

    @contextlib.asynccontextmanager
    async def run() -> AsyncIterator[None]:
        view = LineView(await state.client(None))
        task = asyncio.get_running_loop().create_task(view.run(), name="dashboard line view")
        _VIEWS[id(state)] = view
        try:
            yield
        finally:
            del _VIEWS[id(state)]
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return run()
