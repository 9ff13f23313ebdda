"""The dashboard page and its live stream (``/``, ``/ui/*``). Owned by helper web-page.

A placeholder until the page lands: ``routes`` returns no route (``static/index.html`` is then
served at ``/`` by the app's static mount), and ``background`` runs nothing.

The contract with ``bus.web.app``: ``routes(state)`` returns this module's Starlette routes
(mounted before the static files, so they win); ``background(state)`` returns an async context
manager entered for the app's lifetime, after the bus connection is open (the place for tasks
that follow the line for the page).
"""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.routing import BaseRoute

from bus.web.state import WebState

__all__ = ["background", "routes"]


def routes(state: WebState) -> list[BaseRoute]:
    """The page's routes (none yet)."""
    return []


def background(state: WebState) -> contextlib.AbstractAsyncContextManager[Any]:
    """What runs beside the page while the app runs (nothing yet)."""
    return contextlib.nullcontext()
