"""The broker's event path: the XSUB publishers connect to, the XPUB subscribers connect to, and
the thread that joins them.

Two ways to join them, chosen once, when the broker starts:

- **The C proxy** (``zmq.proxy_steerable``): libzmq forwards events and subscriptions with no
  Python code per message, at the speed of ZeroMQ itself. Nothing can be checked per message.
  The broker's own events (presence, probes) reach the XSUB through an ``inproc://`` PUB. This is
  the path of every line without an access list, and of secured lines whose access list puts no
  rule on publishing (``check_publish = false``) nor on subscribing.
- **A Python forwarding loop**, when the access list checks publishing (each event's topic
  against its publisher's identity, the ``User-Id`` of the frame) or subscribing (the XPUB in
  ``XPUB_MANUAL`` mode: each subscription is applied, and forwarded to the publishers, only if
  the subscriber may have it). The broker's own events come in on an ``inproc://`` PULL of their
  own and are forwarded unchecked; nothing arriving on the XSUB is taken for the broker's.

The loop reads ``self.acl`` on every message, so a reload takes effect by swapping that
reference. ``drop(domains)`` (after a reload revoked a key) stops the thread, unbinds and binds
the endpoints again so every peer reconnects and handshakes afresh, and starts the thread again.

Counters the loop keeps are plain integers (``forbidden_publish``, ``forbidden_subscribe``,
``malformed``): the broker's thread reads them for ``stats`` while this thread writes them.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final

import structlog
import zmq

from bus._listen import listen
from bus.security.acl import Acl
from bus.security.curve import DOMAIN_PUBLISH, DOMAIN_SUBSCRIBE, secure_server
from bus.security.keys import KeyPair
from bus.security.ratelimit import RejectLog, SummarizingLimiter
from bus.security.zap import drop_connections

__all__ = ["EventPath", "user_id"]

log = structlog.get_logger()

_BATCH: Final = 512
_NOBLOCK: Final = zmq.NOBLOCK
_SUBSCRIBE: Final = 1
_UNSUBSCRIBE: Final = 0
#: The loop's poll timeout: how often it writes the summary of suppressed log lines.
_TICK_MS: Final = 1000
_TERMINATE: Final = b"TERMINATE"


def user_id(frame: zmq.Frame) -> str | None:
    """The identity the ZAP handler gave the connection ``frame`` came on, or None (no CURVE on
    it, or a message libzmq made itself, such as the unsubscriptions of a closed connection)."""
    try:
        value = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    return value if isinstance(value, str) else None


class EventPath:
    """The XSUB/XPUB pair of a broker and the thread between them.

    Args:
        ctx: The broker's context (the ZAP handler's, when ``keys`` is given).
        publish: Endpoint the XSUB binds (publishers connect).
        subscribe: Endpoint the XPUB binds (subscribers connect).
        keys: The broker's key pair: both sockets become CURVE servers. None: plaintext.
        acl: The access list, when the line has one; decides ``checks_publish`` and
            ``checks_subscribe`` for the life of this object.
        reject_log: Limits of the loop's own log of refused events and subscriptions.
        subscriber_queue: Events queued per subscriber (the XPUB's SNDHWM) before that
            subscriber's are dropped; never blocks the others (no ``XPUB_NODROP``).
        ipc: The broker's Unix-socket endpoints by role (``bus.ipc.endpoints``): the XSUB also
            binds ``publish`` and the XPUB ``subscribe``. None: only the two above.
    """

    def __init__(
        self,
        ctx: zmq.Context[Any],
        publish: str,
        subscribe: str,
        *,
        keys: KeyPair | None = None,
        acl: Acl | None = None,
        reject_log: tuple[int, float] = (10, 10.0),
        subscriber_queue: int = 100_000,
        ipc: Mapping[str, str] | None = None,
    ) -> None:
        self._ctx = ctx
        self._ipc = ipc or {}
        self._subscriber_queue = subscriber_queue
        self._publish = publish
        self._subscribe = subscribe
        self._keys = keys
        self.acl = acl
        #: The loop checks each event's publisher (else the C proxy runs, unless subscriptions).
        self.checks_publish = acl is not None and acl.checks_publish
        #: The XPUB is in XPUB_MANUAL mode and each subscription is checked.
        self.checks_subscribe = acl is not None and acl.checks_subscribe
        self.python_loop = self.checks_publish or self.checks_subscribe
        self._reject_limits = reject_log
        self.endpoints: dict[str, str] = {}
        self.forbidden_publish = 0
        self.forbidden_subscribe = 0
        self.malformed = 0
        self.forwarded = 0
        # Refused subscriptions per topic: their metadata-less unsubscriptions (when the
        # subscriber goes) must not reach the publishers, whose XSUB count never included them.
        self._refused: Counter[bytes] = Counter()
        self._thread: threading.Thread | None = None
        self._xsub: zmq.Socket[bytes]
        self._xpub: zmq.Socket[bytes]
        self._own: zmq.Socket[bytes]
        self._control: zmq.Socket[bytes]
        self._control_peer: zmq.Socket[bytes]
        self._input = f"inproc://linebus-events-{id(self)}"

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> dict[str, str]:
        """Bind both sockets, start the thread; return ``{"publish": ..., "subscribe": ...}``."""
        ctx = self._ctx
        xsub = ctx.socket(zmq.XSUB)
        xsub.linger = 0
        xsub.rcvhwm = 100_000
        xpub = ctx.socket(zmq.XPUB)
        xpub.linger = 0
        xpub.sndhwm = self._subscriber_queue
        if self._keys is not None:
            secure_server(xsub, self._keys, DOMAIN_PUBLISH)
            secure_server(xpub, self._keys, DOMAIN_SUBSCRIBE)
        if self.checks_subscribe:
            xpub.setsockopt(zmq.XPUB_MANUAL, 1)
        # The broker's own events: a PULL of their own in the loop (nothing from the XSUB is
        # taken for the broker's), the XSUB itself over inproc under the C proxy.
        own = ctx.socket(zmq.PULL) if self.python_loop else xsub
        own.linger = 0
        try:
            own.bind(self._input)
            listen(xsub, self._publish, "publish")
            listen(xpub, self._subscribe, "subscribe")
            if self._ipc:
                listen(xsub, self._ipc["publish"], "publish")
                listen(xpub, self._ipc["subscribe"], "subscribe")
        except BaseException:
            # Closed here, as close() knows only a started path's: an open socket would keep
            # the broker's context (and so the failing broker process) from ending.
            for sock in {xsub, xpub, own}:
                sock.close(linger=0)
            raise
        self._xsub, self._xpub, self._own = xsub, xpub, own
        self.endpoints = {
            "publish": xsub.getsockopt_string(zmq.LAST_ENDPOINT),
            "subscribe": xpub.getsockopt_string(zmq.LAST_ENDPOINT),
        }
        self._control = ctx.socket(zmq.PAIR)
        self._control.linger = 0
        control_addr = f"inproc://linebus-events-control-{id(self)}"
        self._control.bind(control_addr)
        self._control_peer = ctx.socket(zmq.PAIR)
        self._control_peer.linger = 0
        self._control_peer.connect(control_addr)
        self._start_thread()
        return self.endpoints

    def publisher(self) -> zmq.Socket[bytes]:
        """A new socket (the caller owns it) on which the broker sends its own event frames."""
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.PUSH if self.python_loop else zmq.PUB)
        sock.linger = 0
        if self.python_loop:
            sock.sndhwm = 100_000
        sock.connect(self._input)
        return sock

    def _start_thread(self) -> None:
        target = self._run_loop if self.python_loop else self._run_proxy
        self._thread = threading.Thread(target=target, name="linebus-events", daemon=True)
        self._thread.start()

    def _stop_thread(self) -> None:
        if self._thread is None:
            return
        self._control.send(_TERMINATE)
        self._thread.join(timeout=5)
        self._thread = None

    def drop(self, domains: frozenset[str]) -> None:
        """Close every connection of the sockets of ``domains`` (publish, subscribe); the peers
        reconnect and handshake again. Runs from the broker's thread while this one is stopped."""
        targets = [
            (sock, self.endpoints[role])
            for domain, sock, role in (
                (DOMAIN_PUBLISH, self._xsub, "publish"),
                (DOMAIN_SUBSCRIBE, self._xpub, "subscribe"),
            )
            if domain in domains
        ]
        if not targets:
            return
        self._stop_thread()
        try:
            for sock, endpoint in targets:
                drop_connections(sock, endpoint)
        finally:
            self._start_thread()

    def close(self) -> None:
        """Stop the thread and close every socket."""
        if not self.endpoints:
            return
        self._stop_thread()
        for sock in {self._xsub, self._xpub, self._own, self._control, self._control_peer}:
            sock.close(linger=0)
        self.endpoints = {}

    def stats(self) -> dict[str, Any]:
        """How events are forwarded, and what the loop refused."""
        if not self.python_loop:
            return {
                "path": "C proxy",
                "note": "forwarded by the C proxy; count gaps with each event's per-topic "
                "sequence number",
            }
        return {
            "path": "checked",
            "checks_publish": self.checks_publish,
            "checks_subscribe": self.checks_subscribe,
            "forwarded": self.forwarded,
            "forbidden_publish": self.forbidden_publish,
            "forbidden_subscribe": self.forbidden_subscribe,
            "malformed": self.malformed,
        }

    # --- the two joiners ------------------------------------------------------------------

    def _run_proxy(self) -> None:
        with contextlib.suppress(zmq.ContextTerminated):
            zmq.proxy_steerable(self._xsub, self._xpub, None, self._control_peer)

    def _run_loop(self) -> None:
        xsub, xpub, own, control = self._xsub, self._xpub, self._own, self._control_peer
        rejects = RejectLog(log.warning, SummarizingLimiter(*self._reject_limits))
        poller = zmq.Poller()
        for sock in (xsub, xpub, own, control):
            poller.register(sock, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll(_TICK_MS))
                if control in ready and control.recv() == _TERMINATE:
                    return
                if xsub in ready:
                    self._forward_events(xsub, xpub, rejects)
                if xpub in ready:
                    self._forward_subscriptions(xpub, xsub, rejects)
                if own in ready:
                    self._forward_own(own, xpub)
                rejects.tick()
        except zmq.ContextTerminated:
            pass

    def _forward_own(self, own: zmq.Socket[bytes], xpub: zmq.Socket[bytes]) -> None:
        for _ in range(_BATCH):
            try:
                frame = own.recv(_NOBLOCK, copy=False)
            except zmq.Again:
                return
            xpub.send(frame, copy=False)

    def _forward_events(
        self, xsub: zmq.Socket[bytes], xpub: zmq.Socket[bytes], rejects: RejectLog
    ) -> None:
        check = self.checks_publish
        for _ in range(_BATCH):
            try:
                frame = xsub.recv(_NOBLOCK, copy=False)
            except zmq.Again:
                return
            if frame.more:  # an event is one frame: drop the message whole
                while xsub.rcvmore:
                    xsub.recv(copy=False)
                self.malformed += 1
                rejects("event_rejected", "malformed", problem="more than one frame")
                continue
            if check:
                acl = self.acl
                data = frame.bytes
                identity = user_id(frame)
                if acl is None or identity is None or not acl.may_publish(identity, data):
                    self.forbidden_publish += 1
                    topic = data.split(b"\0", 1)[0][:128].decode("utf-8", "replace")
                    rejects("event_rejected", "forbidden_publish", identity=identity, topic=topic)
                    continue
            xpub.send(frame, copy=False)
            self.forwarded += 1

    def _forward_subscriptions(
        self, xpub: zmq.Socket[bytes], xsub: zmq.Socket[bytes], rejects: RejectLog
    ) -> None:
        manual = self.checks_subscribe
        refused = self._refused
        for _ in range(_BATCH):
            try:
                frame = xpub.recv(_NOBLOCK, copy=False)
            except zmq.Again:
                return
            data = frame.bytes
            if not manual:
                xsub.send(data)  # what the C proxy does
                continue
            if not data or data[0] not in (_SUBSCRIBE, _UNSUBSCRIBE):
                continue  # not a subscription: nothing for the publishers
            topic = data[1:]
            # None: a subscriber's connection ended, and libzmq unsubscribes for it.
            identity = user_id(frame)
            acl = self.acl
            if data[0] == _SUBSCRIBE:
                decision = acl.may_subscribe(identity, topic) if acl and identity else None
                if decision:
                    # Applies to the pipe of the message just received (before the next recv).
                    xpub.setsockopt(zmq.SUBSCRIBE, topic)
                    xsub.send(data)
                else:
                    refused[topic] += 1
                    self.forbidden_subscribe += 1
                    rejects(
                        "subscription_refused",
                        decision.rule if decision is not None else "unknown_identity",
                        identity=identity,
                        topic=topic[:128].decode("utf-8", "replace"),
                    )
            elif identity is not None and acl is not None and acl.may_subscribe(identity, topic):
                xpub.setsockopt(zmq.UNSUBSCRIBE, topic)
                xsub.send(data)
            elif refused[topic] > 0:
                # A refused subscription going away (or, when unsure, an allowed one: the XSUB
                # then keeps a topic too many, which is safe since the XPUB filters per pipe).
                refused[topic] -= 1
                if not refused[topic]:
                    del refused[topic]
            elif identity is None:
                xsub.send(data)
