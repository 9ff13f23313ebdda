"""What the web app runs with: its settings, and its connections to the bus, one per identity.

Without tokens every request goes through one connection, made with the app's own keys (on a
secured line, the ``[web]`` identity's; ``web`` by default). With tokens each request acts as
its token's identity, through a connection of that identity's own key pair (opened on first
use, kept for the app's lifetime), so the broker's access list applies to it as to any client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bus.aio import AsyncClient, AsyncSubscription
from bus.client import ClientKeys
from bus.web.auth import Tokens

__all__ = ["DEFAULT_LISTEN", "WebSettings", "WebState"]

#: Where ``linebus web`` listens unless told otherwise.
DEFAULT_LISTEN = "127.0.0.1:8750"


@dataclass(frozen=True, slots=True)
class WebSettings:
    """How the app reaches the bus and whom it serves.

    Attributes:
        endpoint: The broker's command endpoint (None: ``LINEBUS_ENDPOINT`` or the default).
        subscribe_endpoint: The broker's subscribe endpoint (None: beside the command one,
            ``bus.protocol.subscribe_beside``).
        keys: The app's own keys (None: plaintext): the connection of requests without a token
            identity, and of the dashboard's own view of the line.
        tokens: Bearer tokens and their identities; None: no token is asked for.
        identity_keys: The keys of each token's identity (None: plaintext), loaded at start.
        call_timeout_s: The deadline of a gateway call that names none.
        max_timeout_s: The longest deadline a request may ask for.
        max_body_bytes: The largest request body accepted (JSON or upload), in bytes.
    """

    endpoint: str | None = None
    subscribe_endpoint: str | None = None
    keys: ClientKeys | None = None
    tokens: Tokens | None = None
    identity_keys: Mapping[str, ClientKeys | None] = field(default_factory=dict)
    call_timeout_s: float = 30.0
    max_timeout_s: float = 3600.0
    max_body_bytes: int = 16 * 1024 * 1024


@dataclass(slots=True)
class WebState:
    """The app's bus connections while it runs (``app.state.web``)."""

    settings: WebSettings
    _clients: dict[str | None, AsyncClient] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _new_client(self, keys: ClientKeys | None) -> AsyncClient:
        return AsyncClient(
            self.settings.endpoint,
            subscribe_endpoint=self.settings.subscribe_endpoint,
            timeout=self.settings.call_timeout_s,
            keys=keys if keys is not None else False,
        )

    async def open(self) -> None:
        """Open the app's own connection (the lifespan's start)."""
        await self.client(None)

    async def client(self, identity: str | None) -> AsyncClient:
        """The connection of ``identity`` (None: the app's own), opened on first use.

        Raises:
            KeyError: ``identity`` is not one of the tokens' identities.
        """
        found = self._clients.get(identity)
        if found is not None:
            return found
        async with self._lock:
            found = self._clients.get(identity)
            if found is None:
                keys = (
                    self.settings.keys
                    if identity is None
                    else self.settings.identity_keys[identity]
                )
                found = self._new_client(keys)
                found.open()
                self._clients[identity] = found
            return found

    async def subscribe(
        self, identity: str | None, *prefixes: str, **options: Any
    ) -> AsyncSubscription:
        """A subscription to ``prefixes`` through ``identity``'s connection (closed by the caller)."""
        return (await self.client(identity)).subscribe(*prefixes, **options)

    async def close(self) -> None:
        """Close every connection (the lifespan's end)."""
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.close()
