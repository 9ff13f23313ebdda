"""The actor runtime: serve an actor's commands on the bus, publish its events, stay registered.

Subclass ``Actor``, declare commands with ``@command``, and open/close the device in
``on_start``/``on_stop``::

    class Thermometer(Actor):
        kind = "thermometer"

        async def on_start(self) -> None:
            self.driver = await ThermometerDriver.open(self.options["address"])

        @command
        async def read(self, channel: int = 0) -> float:
            \"\"\"Read one channel, in degrees Celsius.\"\"\"
            value = await self.driver.read(channel)
            self.publish("reading", {"channel": channel, "value": value})
            return value

The runtime validates arguments against the signature, runs one command at a time unless a
command is ``concurrent``, passes a ``CommandContext`` for progress, cancels a command when its
caller cancels or its deadline passes, heartbeats, re-registers after a broker restart, and shuts
down in order: stop taking work, finish (or after a grace period cancel) the current command,
fail the queue, close the device.

``Actor`` is the thin class users subclass; the work is done by four collaborators, each in
its own module:

- ``bus._publisher.Publisher``: events, their sequence numbers, and the subscriptions that decide
  whether an event is encoded at all;
- ``bus._requests.Requests``: argument validation, the one-at-a-time queue and concurrent
  commands, deadlines, cancel, and the answers;
- ``bus._jobs.JobEvents``: the ``<service>.job`` events of commands that report progress;
- ``bus._link.BrokerLink``: the DEALER connection to the broker, registration (and
  re-registration after a broker restart), heartbeats, DISCONNECT, and the receive loop.

I/O is plain pyzmq sockets driven from the asyncio loop's reader callback (no zmq.asyncio
futures on the hot path): each request costs one receive, one handler call, one send.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import structlog
import zmq

from bus import protocol
from bus._eventring import DEFAULT_RING_AGE_S, DEFAULT_RING_SIZE
from bus._jobs import JobEvents
from bus._link import BrokerLink
from bus._publisher import Publisher
from bus._requests import Requests
from bus.client import ClientKeys
from bus.commands import CommandContext, CommandSpec, command, command_table

__all__ = ["Actor", "ActorSettings", "CommandContext", "command"]

log = structlog.get_logger()


class ActorSettings:
    """How an actor reaches the broker and how it times itself.

    Args:
        endpoint: Broker command endpoint (DEALER connects here).
        publish_endpoint: Broker publish endpoint (the actor's XPUB connects here).
        subscribe_endpoint: Broker subscribe endpoint, for actors that also listen to events.
        heartbeat_s: Interval between heartbeats.
        heartbeat_timeout_s: Broker silence after which the actor re-registers.
        max_queue: Requests that may wait for the device before new ones get ``busy``.
        shutdown_grace_s: How long shutdown lets the current command finish before cancelling it.
        keys: The actor's CURVE keys on a secured line (its own pair and the broker's public
            key); None for plaintext. ``Actor.run`` and ``linebus actor`` take them from the
            environment (``LINEBUS_KEY_FILE`` and ``LINEBUS_BROKER_KEY_FILE``, set by the
            supervisor); ``serve`` uses exactly what it is given.
        event_ring: Recent events kept per topic for subscribers repairing a gap (``replay``);
            0 keeps none. Memory: at most this many events per topic.
        event_ring_age_s: Kept events older than this are no longer replayed.
    """

    def __init__(
        self,
        endpoint: str = protocol.DEFAULT_COMMAND_ENDPOINT,
        publish_endpoint: str = protocol.DEFAULT_PUBLISH_ENDPOINT,
        *,
        subscribe_endpoint: str = protocol.DEFAULT_SUBSCRIBE_ENDPOINT,
        heartbeat_s: float = 1.0,
        heartbeat_timeout_s: float = 2.5,
        max_queue: int = 1000,
        shutdown_grace_s: float = 2.0,
        keys: ClientKeys | None = None,
        event_ring: int = DEFAULT_RING_SIZE,
        event_ring_age_s: float = DEFAULT_RING_AGE_S,
    ) -> None:
        self.endpoint = endpoint
        self.publish_endpoint = publish_endpoint
        self.subscribe_endpoint = subscribe_endpoint
        self.heartbeat_s = heartbeat_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.max_queue = max_queue
        self.shutdown_grace_s = shutdown_grace_s
        self.keys = keys
        self.event_ring = event_ring
        self.event_ring_age_s = event_ring_age_s


class Actor:
    """Base class of every actor; see the module docstring.

    Args:
        name: The service name callers use (``fr1``, ``flux.p1``).
        options: The kind's options from the ``[actor.options]`` table of the config.
    """

    kind: ClassVar[str] = "actor"
    commands: ClassVar[dict[str, CommandSpec]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.commands = command_table(cls)

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        self.name = protocol.validate_service_name(name)
        self.options: dict[str, Any] = dict(options or {})
        self.settings = ActorSettings()
        self.log = log.bind(actor=self.kind, service=name)
        self._publisher = Publisher(self.name, protocol.new_epoch())
        self._requests = Requests(
            self,
            self.commands,
            service=self.name,
            kind=self.kind,
            log=self.log,
            jobs=JobEvents(self._publisher.publish),
        )
        self._broker_link: BrokerLink | None = None
        self._stop_request: asyncio.Event | None = None

    # --- hooks for subclasses ---------------------------------------------------------------

    async def on_start(self) -> None:
        """Open the device; called before the actor registers. Raise to refuse to start."""

    async def on_stop(self) -> None:
        """Close the device; called last in an orderly shutdown."""

    def describe_extra(self) -> dict[str, Any]:
        """Extra facts for ``describe`` (device model, firmware); override freely."""
        return {}

    def device_addresses(self) -> list[str]:
        """The addresses of the devices this actor drives; override in a device actor.

        LAN ``host:port``, a serial port (``/dev/ttyUSB0``, ``COM3``), a device uuid, an API's
        base URI: whatever a vendor library's constructor takes, so that a facade built the
        vendor's way can ask the broker which service drives it (``lookup``, PROTOCOL.md §13;
        how addresses compare: ``bus.addresses``). Sent as ``devices`` in READY and shown by
        ``describe``. When they change after registration, call ``devices_changed``.
        """
        return []

    def devices_changed(self) -> None:
        """Advertise ``device_addresses()`` again (a new READY), after they changed; call it
        from the actor's event loop. Before registration it does nothing (READY will carry
        them)."""
        if self._broker_link is not None:
            self._broker_link.send_ready()

    # --- built-in commands ------------------------------------------------------------------

    @command(concurrent=True)
    def ping(self) -> dict[str, Any]:
        """Answer at once: the actor is alive. Returns service, kind, pid and queue length."""
        return {
            "service": self.name,
            "kind": self.kind,
            "pid": os.getpid(),
            "queued": self._requests.queued,
        }

    @command(concurrent=True)
    def describe(self) -> dict[str, Any]:
        """Describe this actor: its kind, documentation and every command with its arguments."""
        return self._description()

    def _description(self) -> dict[str, Any]:
        return {
            "service": self.name,
            "kind": self.kind,
            "doc": (type(self).__doc__ or "").strip(),
            "commands": {name: spec.describe() for name, spec in sorted(self.commands.items())},
            **self.describe_extra(),
            "devices": list(self.device_addresses()),
        }

    @command(concurrent=True)
    def replay(self, topic: str, epoch: int, after: int, before: int) -> list[list[Any]]:
        """Events of ``topic`` published with ``after < seq < before``, oldest first, each
        ``[seq, ts, data]``, from the ring of recent events (repairing a gap, PROTOCOL.md §9).

        A seq missing from the answer was not kept. Raises ``too_old`` when ``after + 1`` is no
        longer kept (``details.oldest``: the oldest seq kept, to ask again from) or ``epoch`` is
        not this actor's (it restarted).
        """
        return self._publisher.replay(topic, epoch, after, before)

    # --- events -----------------------------------------------------------------------------

    @property
    def events_dropped(self) -> int:
        """Events that could not be sent: no broker connection yet, or subscribers too slow."""
        return self._publisher.events_dropped

    def publish(self, event: str, data: Any = None) -> None:
        """Publish ``data`` on topic ``<service>.<event>`` with the next sequence number.

        Never blocks: if subscribers cannot keep up the event is dropped, and counted in
        ``events_dropped`` (subscribers see the gap through the sequence number). With no
        subscriber to the topic the event is not even encoded; its number is used up all the same.
        """
        self._publisher.publish(event, data)

    def publish_many(
        self,
        event: str,
        items: Iterable[Any],
        *,
        count: int | None = None,
        common: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish each of ``items`` on ``<service>.<event>``, in order, as ``publish`` does.

        One topic lookup and one timestamp for all of them: for actors that emit a burst of
        events at once (one per stored record of a batch, say). With ``common``, every item is
        a map and each event's data is ``{**common, **item}``, with ``common`` encoded once.
        ``items`` is only iterated when someone subscribes to the topic: give ``count`` to pass
        a lazy iterable (the sequence numbers still advance by ``count`` when nobody listens).
        """
        self._publisher.publish_many(event, items, count=count, common=common)

    def limit_event_ring(self, prefix: str, size: int) -> None:
        """Keep at most ``size`` recent events (for ``replay``) of the topics ``<service>.<prefix>...``.

        For topics whose events are large (a batch of records each), where the actor's
        ``event_ring`` setting would hold too much memory. Call it in ``__init__`` or ``on_start``.
        """
        self._publisher.limit_ring(prefix, size)

    # --- serving ----------------------------------------------------------------------------

    async def serve(
        self, settings: ActorSettings | None = None, *, stop: asyncio.Event | None = None
    ) -> None:
        """Open the device, register with the broker and serve until ``stop`` is set."""
        if settings is not None:
            self.settings = settings
        settings = self.settings
        loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        self._stop_request = stop
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        await self.on_start()
        link = self._broker_link = BrokerLink(
            self.name,
            self.kind,
            self._requests,
            describe=self._description,
            on_replaced=self.request_stop,
            heartbeat_s=settings.heartbeat_s,
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
            log=self.log,
            keys=settings.keys,
            on_refused=self.request_stop,
        )
        self._requests.start(loop, link.send, max_queue=settings.max_queue)
        self._publisher.set_ring(settings.event_ring, settings.event_ring_age_s)
        try:
            self._publisher.open(ctx, settings.publish_endpoint, loop, keys=settings.keys)
            await link.open(ctx, settings.endpoint, loop)
            self.log.info(
                "actor_started",
                endpoint=settings.endpoint,
                pid=os.getpid(),
                curve=settings.keys is not None,
            )
            try:
                await stop.wait()
            finally:
                link.stop_heartbeats()
                await self._shutdown(link)
        finally:
            link.close()
            self._publisher.close()
            self._broker_link = None
            self.log.info("actor_stopped")
        if link.refused is not None:
            # The broker refused our key: exit with that error (the supervisor shows it and
            # restarts us with back-off, so a key added meanwhile is picked up).
            raise link.refused

    def request_stop(self) -> None:
        """Begin an orderly shutdown (safe to call from a signal handler in the loop)."""
        if self._stop_request is not None:
            self._stop_request.set()

    async def _shutdown(self, link: BrokerLink) -> None:
        """Stop taking work, finish or cancel the current command, fail the queue, close."""
        requests = self._requests
        self.log.info("actor_stopping", queued=requests.queued, running=requests.busy)
        await requests.stop(self.settings.shutdown_grace_s)
        link.send(protocol.encode_disconnect("actor stopping"))
        try:
            await self.on_stop()
        except Exception:  # closing a broken device must not hide the orderly exit
            self.log.exception("on_stop_failed")

    # --- process entry ----------------------------------------------------------------------

    def run(self, settings: ActorSettings | None = None) -> None:
        """Serve in this process until SIGINT or SIGTERM (what ``linebus actor`` calls).

        Without ``settings``: the default endpoints, and the keys of the environment.

        Raises:
            KeyFileError: keys are configured in the environment but cannot be used.
            Unauthenticated: the broker refused the actor's key.
        """
        if settings is None:
            settings = ActorSettings(keys=ClientKeys.load())

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await self.serve(settings, stop=stop)

        asyncio.run(main())
