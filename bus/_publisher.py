"""An actor's event publishing: topics, sequence numbers, and who is listening.

Each event goes out as one frame ``<service>.<event> NUL msgpack-body`` on an XPUB socket
connected to the broker's XSUB. Every topic has a ``TopicEntry``: its cached frame prefix, its
last sequence number (subscribers detect gaps from it) and whether a subscription can match it.

XPUB, not PUB: the socket also hands us the subscriptions that reach us through the broker, so an
event nobody subscribed to is not encoded at all (PUB would encode it and then drop it, as ZeroMQ
filters at the publisher). Its sequence number is used up all the same. The subscription set is
read when the socket's FD is readable, once per loop turn after events were sent (a send can
consume the FD's edge), and before publishing to a topic not known to be heard (a PUB socket
applies waiting subscriptions at send time, so a subscriber that just got ready is not missed).

Every topic also keeps its recent events in a ring (``bus._eventring``), heard or not, so a
subscriber that detects a gap can ask for them again (``replay``, the built-in command).

``publish`` is the hot path of an event-heavy actor: one dict lookup, one ring append, one
encode, one send.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import zmq

from bus import _zmqio, protocol
from bus._eventring import DEFAULT_RING_AGE_S, DEFAULT_RING_SIZE, EventRing, RingEntry
from bus.client import ClientKeys
from bus.errors import TooOld

__all__ = ["Publisher", "TopicEntry"]

# Plain ints: pyzmq's flags are IntFlag enums, and every operation on one builds a new member.
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_now = time.time
_send_frame = _zmqio.send_frame  # without pyzmq's Python layer: see bus/_zmqio.py
_encode_body = protocol.encode_event_body


class TopicEntry:
    """One topic of a publisher: its frame prefix, last sequence number, whether it is heard, and
    its recent events.

    ``heard`` is None until it is computed from the subscriptions, and again whenever they change.
    """

    __slots__ = ("heard", "prefix", "ring", "seq")

    def __init__(self, prefix: bytes, ring: EventRing) -> None:
        self.prefix = prefix
        self.seq = 0
        self.heard: bool | None = None
        self.ring = ring


class Publisher:
    """Publishes one service's events; see the module docstring.

    Usable before ``open`` and after ``close``: events are then counted in ``events_dropped``
    (their sequence numbers are used up, so subscribers see the gap).

    Args:
        service: The publishing service's name (the first part of every topic).
        epoch: The random epoch of this publisher's sequences (``protocol.new_epoch``).
        ring_size: Recent events kept per topic for ``replay`` (0: none).
        ring_age_s: Kept events older than this are not replayed.
    """

    def __init__(
        self,
        service: str,
        epoch: int,
        *,
        ring_size: int = DEFAULT_RING_SIZE,
        ring_age_s: float = DEFAULT_RING_AGE_S,
    ) -> None:
        self.service = service
        self.epoch = epoch
        EventRing(ring_size, ring_age_s)  # the same checks, before any topic needs one
        self.ring_size, self.ring_age_s = ring_size, ring_age_s
        self._ring_limits: dict[str, int] = {}  # event prefix -> at most this many kept
        #: Events that could not be sent (no connection yet, or subscribers not keeping up).
        self.events_dropped = 0
        self._topics: dict[str, TopicEntry] = {}
        self._subscriptions: set[bytes] = set()  # prefixes subscribed through the broker
        self._check_due = False
        self._socket: zmq.Socket[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1

    def open(
        self,
        ctx: zmq.Context[Any],
        endpoint: str,
        loop: asyncio.AbstractEventLoop,
        *,
        keys: ClientKeys | None = None,
    ) -> None:
        """Connect to the broker's publish endpoint (as a CURVE client with ``keys``) and watch
        the socket for subscriptions."""
        sock: zmq.Socket[bytes] = ctx.socket(zmq.XPUB)
        sock.linger = 0
        sock.sndhwm = 100_000
        if keys is not None:
            keys.secure(sock)
        sock.connect(endpoint)
        self._socket, self._loop = sock, loop
        self._subscriptions.clear()
        self._forget_heard()
        self._fd = sock.FD
        loop.add_reader(self._fd, self.read_subscriptions)

    def close(self) -> None:
        """Stop watching and close the socket (later events count as dropped)."""
        sock, loop = self._socket, self._loop
        self._socket = None
        if loop is not None and self._fd >= 0:
            loop.remove_reader(self._fd)
        self._fd = -1
        if sock is not None:
            sock.close()

    def publish(self, event: str, data: Any = None) -> None:
        """Publish ``data`` on ``<service>.<event>`` with the topic's next sequence number."""
        entry = self._topics.get(event) or self._new_topic(event)
        seq = entry.seq = entry.seq + 1
        ts = _now()
        entry.ring.append((seq, ts, data, None))
        sock = self._socket
        if sock is None:
            self.events_dropped += 1
            return
        if not entry.heard and not self._heard(entry):
            return
        try:
            _send_frame(sock, entry.prefix + _encode_body(self.service, self.epoch, seq, ts, data))
        except zmq.Again:
            self.events_dropped += 1
        if not self._check_due:
            self._schedule_check()

    def publish_many(
        self,
        event: str,
        items: Iterable[Any],
        *,
        count: int | None = None,
        common: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish each of ``items`` on ``<service>.<event>`` in order; see ``Actor.publish_many``."""
        if count is None:
            items = items if isinstance(items, Sequence) else list(items)
            count = len(items)
        entry = self._topics.get(event) or self._new_topic(event)
        first = entry.seq + 1
        entry.seq += count
        now = _now()
        sock = self._socket
        heard = sock is not None and (entry.heard or self._heard(entry))
        if isinstance(items, Sequence) or heard:
            # A lazy iterable nobody hears is not iterated: its events are not kept either.
            items = items if isinstance(items, Sequence) else list(items)
            ring = entry.ring
            ring.extend(_ring_entries(first, now, items, common, count, ring.size))
        if sock is None:
            self.events_dropped += count
            return
        if not heard:
            return
        prefix = entry.prefix
        if common is None:
            bodies: Iterable[bytes] = (
                _encode_body(self.service, self.epoch, first + i, now, data)
                for i, data in enumerate(items)
            )
        else:
            bodies = protocol.encode_event_bodies(
                self.service, self.epoch, first, now, items, common
            )
        for body in bodies:
            try:
                _send_frame(sock, prefix + body)
            except zmq.Again:
                self.events_dropped += 1
        if not self._check_due:
            self._schedule_check()

    def _new_topic(self, event: str) -> TopicEntry:
        entry = self._topics[event] = TopicEntry(
            protocol.event_prefix(f"{self.service}.{event}"),
            EventRing(self._ring_size(event), self.ring_age_s),
        )
        return entry

    def _ring_size(self, event: str) -> int:
        limits = [n for prefix, n in self._ring_limits.items() if event.startswith(prefix)]
        return min([self.ring_size, *limits])

    def set_ring(self, size: int, age_s: float) -> None:
        """Keep ``size`` recent events per topic, replayable for ``age_s``; events kept so far
        are kept (up to the new size)."""
        EventRing(size, age_s)  # raises ValueError on a bad size or age
        self.ring_size, self.ring_age_s = size, age_s
        for event, entry in self._topics.items():
            ring = EventRing(self._ring_size(event), age_s)
            ring.extend(entry.ring.entries())
            entry.ring = ring

    def limit_ring(self, prefix: str, size: int) -> None:
        """Keep at most ``size`` events of the topics ``<service>.<prefix>...`` (fewer than
        ``ring_size``: for topics whose events are large, such as a batch of records each)."""
        EventRing(size, self.ring_age_s)  # raises ValueError on a bad size
        self._ring_limits[prefix] = size
        self.set_ring(self.ring_size, self.ring_age_s)

    def replay(self, topic: str, epoch: int, after: int, before: int) -> list[list[Any]]:
        """The kept events of ``topic`` with ``after < seq < before``: the ``replay`` command.

        Raises:
            TooOld: ``epoch`` is not this publisher's (it restarted since), the topic is not
                ours or never had an event, or ``after + 1`` fell out of the ring
                (``EventRing.replay``).
            InvalidArguments: ``after``/``before`` make no range.
        """
        prefix = f"{self.service}."
        entry = self._topics.get(topic[len(prefix) :]) if topic.startswith(prefix) else None
        if entry is None or epoch != self.epoch:
            why = "is not published here" if entry is None else "is of an earlier incarnation"
            raise TooOld(
                f"{topic} epoch {epoch} {why}: nothing of it is kept",
                details={"topic": topic, "oldest": None},
            )
        return entry.ring.replay(topic, after, before)

    def _heard(self, entry: TopicEntry) -> bool:
        """Whether a subscription can match the topic of ``entry`` (cached until they change).

        An unknown or unheard topic first takes the subscriptions waiting in the socket, as a
        PUB socket applies them at send time: a subscriber that just got ready must not miss it.
        """
        if not entry.heard:
            self.read_subscriptions()
            if entry.heard is None:
                entry.heard = self._listened(entry.prefix)
        return bool(entry.heard)

    def _schedule_check(self) -> None:
        """A send can consume the socket's FD edge, and with it the wake-up for a subscription
        that arrived meanwhile: look at the socket once more on the next loop turn (once per
        turn, however many events were sent in it)."""
        self._check_due = True
        if self._loop is not None:
            self._loop.call_soon(self.read_subscriptions)

    def _listened(self, prefix: bytes) -> bool:
        """Whether a subscription can match frames that start with ``prefix`` (``topic NUL``)."""
        # A subscription longer than the prefix reaches into the msgpack body: only encoding
        # could tell, so count it as listening.
        return any(prefix.startswith(sub) or sub.startswith(prefix) for sub in self._subscriptions)

    def read_subscriptions(self) -> None:
        """Take the (un)subscriptions the broker forwarded to the XPUB socket; non-blocking.

        The broker's XSUB passes each distinct prefix once (and its withdrawal when the last
        subscriber of it leaves), so a set is the exact state.
        """
        self._check_due = False
        sock = self._socket
        changed = False
        while sock is not None:
            events = sock.getsockopt(_EVENTS)
            if not (isinstance(events, int) and events & _POLLIN):
                break
            try:
                message = sock.recv(_NOBLOCK)
            except zmq.Again:
                break
            if message[:1] == b"\x01":
                self._subscriptions.add(message[1:])
            elif message[:1] == b"\x00":
                self._subscriptions.discard(message[1:])
            changed = True
        if changed:
            self._forget_heard()

    def _forget_heard(self) -> None:
        for entry in self._topics.values():
            entry.heard = None


def _ring_entries(
    first: int,
    now: float,
    items: Sequence[Any],
    common: Mapping[str, Any] | None,
    count: int,
    keep: int,
) -> Iterable[RingEntry]:
    """The ring entries of a ``publish_many``: only the last ``keep`` (what the ring holds), and
    of a ``count`` that disagrees with the items, the lesser."""
    n = min(count, len(items))
    return ((first + i, now, items[i], common) for i in range(max(0, n - keep), n))
