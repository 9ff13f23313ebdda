"""``create_app``: the one Starlette app of ``linebus web`` (gateway, page, static files), and
``serve``, which runs it with uvicorn.

The app's lifespan opens its bus connection (``WebState.open``) before the first request and
closes every connection at shutdown. Routes, in order: the gateway's (``/api/*``,
``bus.web.gateway``), the page's (``bus.web.dashboard``), then the files of ``static/`` at
``/`` (``index.html`` for ``/``). With tokens configured, ``auth.TokenGate`` guards ``/api/``
and ``/ui/``.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from bus.config import parse_listen
from bus.errors import ConfigError
from bus.web import dashboard, gateway
from bus.web.auth import TokenGate
from bus.web.state import WebSettings, WebState

__all__ = ["STATIC", "create_app", "serve"]

#: The page's files, shipped in the package.
STATIC = Path(__file__).resolve().parent / "static"


def create_app(settings: WebSettings) -> Starlette:
    """The app for ``settings``; its state (``app.state.web``) is a ``WebState``."""
    state = WebState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.open()
        try:
            async with dashboard.background(state):
                yield
        finally:
            await state.close()

    app = Starlette(
        routes=[
            *gateway.routes(state),
            *dashboard.routes(state),
            Mount("/", app=StaticFiles(directory=STATIC, html=True), name="static"),
        ],
        middleware=[Middleware(TokenGate, tokens=settings.tokens)],
        exception_handlers={HTTPException: gateway.http_error},
        lifespan=lifespan,
    )
    app.state.web = state
    return app


def serve(
    settings: WebSettings,
    listen: str,
    *,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve the app on ``listen`` until SIGINT or SIGTERM.

    The socket is bound first, so the URL ``announce`` is given (default: printed on stdout)
    names the real port, also for port 0.

    Raises:
        ConfigError: ``listen`` is malformed or cannot be bound.
    """
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {listen}: {exc.strerror}") from None
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"http://{shown}:{sock.getsockname()[1]}/"
    config = uvicorn.Config(
        create_app(settings), log_level="warning", timeout_graceful_shutdown=2, lifespan="on"
    )
    if announce is None:
        print(f"linebus web: serving {url}", flush=True)
    else:
        announce(url)
    with sock:
        uvicorn.Server(config).run(sockets=[sock])
    sys.stdout.flush()
