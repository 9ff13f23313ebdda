"""What every facade in ``clients`` shares: a bus connection it borrows or owns, closed once."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from bus.client import Client, KeysArg

__all__ = ["BusSession", "connect_bus", "sibling_client"]


def connect_bus(
    bus: Client | str | None, subscribe_endpoint: str | None = None, timeout: float | None = None
) -> tuple[Client, bool]:
    """Return ``(client, owned)``: the caller's ``Client`` as it is (borrowed), or a new one for an
    endpoint string (``None``: ``LINEBUS_ENDPOINT`` or the default), which the session owns.

    A new client takes its CURVE keys from the environment (``LINEBUS_KEY_FILE`` and
    ``LINEBUS_BROKER_KEY_FILE``); for other keys, pass a ``Client(keys=...)`` of your own.
    """
    if isinstance(bus, Client):
        return bus, False
    if bus is None or isinstance(bus, str):
        if timeout is None:  # the client's own default
            return Client(bus, subscribe_endpoint=subscribe_endpoint), True
        return Client(bus, subscribe_endpoint=subscribe_endpoint, timeout=timeout), True
    raise TypeError(
        f"bus must be a bus.client.Client or an endpoint string, not {type(bus).__name__}"
    )


def sibling_client(bus: Client, timeout: float | None = None) -> Client:
    """A new connection to the broker of ``bus``, with the same keys (for a thread of its own:
    a ``Client`` is not thread-safe). The caller closes it."""
    keys: KeysArg = bus.keys if bus.keys is not None else False  # never the environment's
    if timeout is None:
        return Client(bus.endpoint, subscribe_endpoint=bus.subscribe_endpoint, keys=keys)
    return Client(
        bus.endpoint, subscribe_endpoint=bus.subscribe_endpoint, timeout=timeout, keys=keys
    )


class BusSession:
    """Base of the facades: holds ``_bus`` (borrowed or owned), closes once, and works as a
    context manager. Subclasses stop what they started in ``_release``, before an owned
    connection is closed."""

    _bus: Client
    _owned: bool
    _closed: bool = False

    def close(self) -> None:
        """End the session (and close the bus connection if this object opened it); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._release()
        if self._owned:
            self._bus.close()

    def _release(self) -> None:
        """Stop background work of the session; the default has none."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def bus(self) -> Client:
        """The bus client this session uses."""
        return self._bus
