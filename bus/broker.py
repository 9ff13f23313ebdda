"""The broker: routes requests to actors by service name and fans events out by topic.

Commands: one ROUTER socket that clients and actors both connect to (DEALER). The broker decodes
only the small header frame of each message; arguments, results and bulk frames are forwarded as
the very frames it received. It keeps every forwarded request until its reply, its deadline, or
the death of its actor, so no caller waits on a request that can no longer be answered.

Events: an XSUB socket (publishers connect) and an XPUB socket (subscribers connect) joined by
libzmq's C proxy in a thread of its own; the broker never touches an event, which keeps event
fan-out at the speed of ZeroMQ itself. Presence events are published there by the broker.

Death of an actor is noticed two ways: its TCP connection closing (the socket monitor reports a
disconnect, and a probe with ROUTER_MANDATORY finds which peer is gone, within milliseconds), and
heartbeat silence past ``heartbeat_timeout_s`` (a hung but connected process).

Headers are read with the decoders of ``bus.protocol`` (``split``, then the decoder of the kind
or, for messages only routed, ``peek_msg_id``); the broker never indexes a header itself.

Security (``SecurityConfig``, docs/PROTOCOL.md §18), when the config names a broker key: every
socket is a CURVE server and a ZAP handler on the broker's own loop lets in known keys only,
naming each connection by its identity. Command messages are then read by ``_drain_secure``: one
``get("User-Id")`` per message, a cached access-list decision per REQUEST (refused: ERROR
``forbidden``, nothing reaches the actor) and per READY (a name live under another identity is
refused: the live actor keeps it). Privileged calls are recorded in the audit log. Events go
through the C proxy unless the access list checks publishing or subscribing (``_eventpath``).
Without a broker key nothing of this runs: the plain ``_drain`` and the C proxy, as fast as ever.
``reload()`` (SIGHUP through ``request_reload``, or the privileged ``reload`` command) re-reads
the known keys and the access list; a revoked identity loses access at once.

Metrics: each final answer adds one to a latency bucket of its service (``ServiceEntry.latency``,
from ``Pending.started``), the only per-message work for them; ``serve`` starts
``bus.metrics.MetricsServer`` when ``[broker] metrics`` is set, which reads these tables from its
own thread when scraped (no lock, nothing else in this loop).

``run()`` is ``run_once()`` in a loop until ``stop()``. Tests drive a broker turn by turn with
``run_once()`` over ``inproc://`` endpoints and a clock of their own (the ``clock`` argument).
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
import signal
import socket
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import structlog
import zmq
from zmq.utils.monitor import parse_monitor_message

from bus import _zmqio, ipc, protocol
from bus._eventpath import EventPath, user_id
from bus._listen import listen
from bus.config import BrokerConfig, SecurityConfig
from bus.config import load as load_config
from bus.directory import LATENCY_BOUNDS, UP, Directory, Pending, ServiceEntry
from bus.errors import (
    BadRequest,
    BusError,
    ConfigError,
    InvalidArguments,
    StorageError,
    Unavailable,
    UnknownCommand,
    UnknownService,
    UnsupportedVersion,
)
from bus.lookup import lookup
from bus.priority import apply_nice
from bus.protocol import Kind
from bus.security.acl import Acl, Decision
from bus.security.audit import AuditLog, summarize_arguments
from bus.security.curve import DOMAIN_COMMAND, DOMAIN_PUBLISH, DOMAIN_SUBSCRIBE, secure_server
from bus.security.exposure import check_exposure
from bus.security.keyring import Keyring
from bus.security.keys import KeyPair
from bus.security.ratelimit import RejectLog, SummarizingLimiter
from bus.security.zap import ZapHandler, drop_connections
from bus.subscribers import SubscriberReports

__all__ = ["Broker", "serve"]

log = structlog.get_logger()

_REQUEST = int(Kind.REQUEST)
_PROGRESS = int(Kind.PROGRESS)
_REPLY = int(Kind.REPLY)
_ERROR = int(Kind.ERROR)
_CANCEL = int(Kind.CANCEL)
_READY = int(Kind.READY)
_HEARTBEAT = int(Kind.HEARTBEAT)
_DISCONNECT = int(Kind.DISCONNECT)
_HEARTBEAT_FRAME = protocol.encode_heartbeat()[0]
#: Why a connection lost its service to a newer READY (its requests' error, its DISCONNECT).
_REPLACED = f"{protocol.REASON_REPLACED} by a new registration"
_split = protocol.split
_peek_msg_id = protocol.peek_msg_id
_request_route = protocol.request_route
_request_target = protocol.request_target
_request_ttl = protocol.request_ttl
_bucket = bisect_left
_LATENCY_BOUNDS = LATENCY_BOUNDS
_NOBLOCK = _zmqio.NOBLOCK
_send_frames = _zmqio.send_frames
_readable = _zmqio.readable
_recv_frame = _zmqio.recv_frame
_recv_rest = _zmqio.recv_rest
_DRAIN_BATCH = 512
_STABLE_REASONS = frozenset({"too_large", "header_too_large", "duplicate_id", "unhandled"})
_ANSWERS = frozenset({_PROGRESS, _REPLY, _ERROR})
#: Kinds the broker passes on with their bulk frames: those that may carry them, and ERROR,
#: which it routes unchecked like every answer (its receiver refuses bulk frames after it).
_BULK_KINDS = protocol.BULK_KINDS | {_ERROR}
#: The ``routed`` counter of each forwarded answer.
_ROUTED_AS = {_PROGRESS: "progress", _REPLY: "reply", _ERROR: "error"}
#: How long ``run()`` waits at most between two looks at ``stop()``.
_STOP_POLL_S = 0.2
#: Monitor events of a connection that never completed its handshake (a refused key, garbage):
#: its DISCONNECTED follows, and is no reason to probe the actors.
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
#: At most one round of probes per this many (real) seconds, however many connections close.
_PROBE_ROUND_S = 0.05
#: Bound of the count of failed handshakes whose DISCONNECTED is still to come.
_MAX_FAILED_HANDSHAKES = 10_000
#: Bound of the cache of which (service, command) the access list makes privileged.
_PRIVILEGED_CACHE_LIMIT = 65_536
#: What CURVE adds to each frame on the wire (the MESSAGE command's name, nonce, flags and MAC).
#: libzmq checks MAXMSGSIZE against the wrapped frame, so a secured ROUTER allows this much more:
#: otherwise a frame just within the limit would cut the sender's connection (no answer at all)
#: instead of reaching the size check that answers it bad_request/too_large, as in plaintext.
_CURVE_FRAME_OVERHEAD = 33
#: The commands of the broker service, for ``unknown_command``.
_BROKER_COMMANDS = "ping, services, describe, lookup, stats, probe, report_subscriber, reload"

#: A message as the ROUTER delivers it: the sender's identity, the header, then bulk frames
#: (received without copying, as zmq.Frame) which the broker forwards untouched.
_Frames = list[bytes | zmq.Frame]


@dataclass(slots=True)
class _Audited:
    """A privileged call forwarded to its actor, recorded in the audit log when it ends."""

    identity: str
    service: str
    command: str
    args: Any


class Broker:
    """A linebus broker; ``start()`` binds, ``run()`` serves until ``stop()``.

    Args:
        config: Endpoints and timing. ``tcp://host:*`` binds a free port; ``endpoints`` tells which.
        ctx: ZeroMQ context to use; a new one by default.
        clock: Monotonic seconds for deadlines and liveness (tests pass one they can advance).
        security: The ``[security]`` table; off (plaintext, loopback or ipc only) by default.
        config_path: The config file ``reload()`` reads ``[security]`` from again; without it, a
            reload re-reads the keys directory and keeps the access list it has.
        expected: The service names the line runs (its config's ``[[actor]]`` names): until one
            registers, its callers get ``unavailable`` (retryable), not ``unknown_service``, so
            a client retrying as documented rides out a broker restart (PROTOCOL.md §8).
    """

    _router: zmq.Socket[bytes]
    _monitor: zmq.Socket[bytes]
    _pub: zmq.Socket[bytes]
    _events: EventPath
    _poller: zmq.Poller

    def __init__(
        self,
        config: BrokerConfig | None = None,
        ctx: zmq.Context[Any] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        security: SecurityConfig | None = None,
        config_path: str | os.PathLike[str] | None = None,
        expected: Iterable[str] = (),
    ) -> None:
        self.config = config or BrokerConfig()
        self.expected = frozenset(expected)
        self.security = security or SecurityConfig()
        self._config_path = config_path
        self._ctx: zmq.Context[Any] = ctx or zmq.Context()
        self._own_ctx = ctx is None
        self._clock = clock
        self.directory = Directory()
        self.subscribers = SubscriberReports()  # what subscribers report they missed (stats)
        self._pending: dict[str, Pending] = {}
        self._deadlines: list[tuple[float, str]] = []
        self.routed: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.endpoints: dict[str, str] = {}
        self._started_at = time.time()
        self._started_at_clock = 0.0  # the clock's reading at start(), for registration_grace_s
        self._stopping = threading.Event()
        self._presence_seq: dict[str, int] = {}
        self._epoch = protocol.new_epoch()
        self._started = False
        self._next_tick = 0.0
        self._rejects = RejectLog(
            log.warning,
            SummarizingLimiter(
                self.security.reject_log_limit, self.security.reject_log_window_s, clock=clock
            ),
        )
        # Probes after a closed connection (see _on_monitor_event).
        self._failed_handshakes = 0
        self._probe_after = 0.0
        self._probe_due = False
        # Security; all None while CURVE is off.
        self._keys: KeyPair | None = None
        self._zap: ZapHandler | None = None
        self._acl: Acl | None = None
        self._audit: AuditLog | None = None
        self._audit_failed = False
        self._audited: dict[str, _Audited] = {}
        self._privileged: dict[tuple[str, str], bool] = {}
        self._caller = ""  # the identity of the request being handled (reload, lookup)
        self._reload_requested = False
        self._drain_router = self._drain
        self._ipc_files: ipc.SocketFiles | None = None  # bound in ipc_dir (bus.ipc)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> dict[str, str]:
        """Bind every socket and start the event path; return the bound endpoints (the
        configured ones; with ``ipc_dir`` each socket also listens there, ``bus.ipc``).

        Raises:
            ConfigError: a bind beyond loopback or ipc without CURVE and without ``insecure``;
                an ``ipc_dir`` that cannot be made or where another broker listens.
            KeyFileError: a configured key, the keys directory or a known key is unusable.
            AclError: the access list does not parse.
            StorageError: the audit log cannot be opened.
        """
        cfg = self.config
        sec = self.security
        # Everything that can refuse to start does so before any socket exists.
        check_exposure(cfg.endpoints(), curve=sec.curve, insecure=sec.insecure)
        if cfg.ipc_dir is not None:
            ipc.claim(cfg.ipc_dir)
        try:
            if sec.curve:
                self._start_security(sec)
            self._bind(cfg, sec)
        except BaseException:
            self._release()
            raise
        self._started_at_clock = self._clock()
        self._next_tick = self._started_at_clock + cfg.heartbeat_s
        self._started = True
        log.info(
            "broker_listening",
            **self.endpoints,
            ipc_dir=str(cfg.ipc_dir) if cfg.ipc_dir is not None else None,
            pid=os.getpid(),
            curve=sec.curve,
        )
        return self.endpoints

    def _bind(self, cfg: BrokerConfig, sec: SecurityConfig) -> None:
        router = self._ctx.socket(zmq.ROUTER)
        self._router = router
        router.router_mandatory = 1  # a send to a gone peer raises instead of vanishing
        router.linger = 0
        router.maxmsgsize = cfg.max_message_bytes + protocol.MAX_HEADER_BYTES
        router.sndhwm = router.rcvhwm = 100_000
        if self._keys is not None:
            router.maxmsgsize += _CURVE_FRAME_OVERHEAD
            secure_server(router, self._keys, DOMAIN_COMMAND)
            self._drain_router = self._drain_secure
        listen(router, cfg.command, "command")
        local = cfg.ipc_endpoints()
        if local:
            listen(router, local["command"], "command")
        self._monitor = router.get_monitor_socket(zmq.EVENT_DISCONNECTED | _HANDSHAKE_FAILED)
        self._poller = zmq.Poller()
        self._poller.register(router, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        if self._zap is not None:
            self._poller.register(self._zap.socket, zmq.POLLIN)

        self._events = EventPath(
            self._ctx,
            cfg.publish,
            cfg.subscribe,
            keys=self._keys,
            acl=self._acl,
            reject_log=(sec.reject_log_limit, sec.reject_log_window_s),
            subscriber_queue=cfg.subscriber_queue,
            ipc=local,
        )
        self.endpoints = {
            "command": router.getsockopt_string(zmq.LAST_ENDPOINT),
            **self._events.start(),
        }
        if cfg.ipc_dir is not None:
            self._ipc_files = ipc.SocketFiles(cfg.ipc_dir)
        self._pub = self._events.publisher()

    def _release(self) -> None:
        """Close what a failed ``start()`` opened (and the context, if it is the broker's)."""
        events: EventPath | None = getattr(self, "_events", None)
        if events is not None:
            events.close()
        for name in ("_pub", "_monitor", "_router"):
            sock: zmq.Socket[bytes] | None = getattr(self, name, None)
            if sock is not None:
                sock.close(linger=0)
        if self._zap is not None:
            self._zap.close()
        if self._audit is not None:
            with contextlib.suppress(StorageError):
                self._audit.close()
        self.endpoints = {}
        if self._ipc_files is not None:
            self._ipc_files.remove()
        if self._own_ctx:
            self._ctx.term()

    def _start_security(self, sec: SecurityConfig) -> None:
        """Load the broker key, the known keys, the access list and the audit log, and start
        the ZAP handler: before any secured socket is bound, so no handshake goes unchecked."""
        keys = sec.load_broker_keys()
        ring = sec.load_keyring()
        acl = sec.access_list(ring.names)
        for name in sorted(acl.unlisted(ring.names)):
            log.warning("acl_names_unknown_identity", identity=name, hint="a typo, or no key yet?")
        if sec.audit_log is not None:
            try:
                sec.audit_log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"audit log {sec.audit_log}: cannot create its directory: {exc.strerror}"
                ) from None
            self._audit = AuditLog(
                sec.audit_log, fsync=sec.audit_fsync, fsync_interval_s=sec.audit_fsync_interval_s
            )
        else:
            log.warning("audit_log_not_configured", hint="set audit_log in [security]")
        zap = ZapHandler(self._ctx, ring, on_refused=self._on_zap_refused)
        zap.start()
        self._keys, self._zap, self._acl = keys, zap, acl
        log.info(
            "security_on",
            identities=len(ring),
            operators=sorted(acl.operators),
            events="checked" if acl.checks_publish or acl.checks_subscribe else "C proxy",
        )

    def stop(self) -> None:
        """Ask ``run()`` to return; safe from any thread or a signal handler."""
        self._stopping.set()

    def request_reload(self) -> None:
        """Ask the loop to ``reload()`` within one turn; safe from a signal handler (SIGHUP)."""
        self._reload_requested = True

    def reload(self, by: str = "") -> dict[str, Any]:
        """Re-read the known keys and the access list; cut off what they no longer allow.

        From the config file (``config_path``) when there is one, else from the keys directory
        and ``[security.known]`` as configured. The new keys and rules are built completely
        first: on any error nothing changes. Then, at once: the ZAP handler lets in only the new
        keys; every request, registration, event and subscription is decided by the new access
        list, which knows only the new identities (a removed identity is refused everything on
        its open connections); actors whose identity is gone or may no longer register their
        name go down; and the sockets where old connections cannot be told apart per message
        are reset (``drop_connections``): the XPUB (and the XSUB under the C proxy) when a
        revoked identity had connected there, the ROUTER when a key was rotated.

        Args:
            by: The identity that asked (the ``reload`` command), for the audit log.

        Raises:
            ConfigError: security is off, the config no longer reads, a key or the access list
                is unusable, or the change needs a restart (broker key, CURVE, the event path).
        """
        who = by or "SIGHUP"
        try:
            ring, acl, sec = self._load_reload()
        except BusError as exc:
            log.error("security_reload_failed", error=exc.message, by=who)
            self._record(who, protocol.BROKER_SERVICE, "reload", None, exc.code, "", exc.message)
            raise
        zap = self._zap
        assert zap is not None
        revocation = zap.reload(ring)
        self._acl = acl
        self._events.acl = acl
        self._privileged.clear()
        self.security = replace(self.security, keys=sec.keys, known=sec.known, acl=sec.acl)
        for name in sorted(acl.unlisted(ring.names)):
            log.warning("acl_names_unknown_identity", identity=name, hint="a typo, or no key yet?")
        for entry in self.directory.up():
            if entry.owner not in ring.names or entry.owner in revocation.identities:
                self._actor_down(entry, f"key of identity {entry.owner!r} revoked")
            elif not acl.may_register(entry.owner, entry.name):
                self._actor_down(entry, f"identity {entry.owner!r} may no longer register it")
        checked = [DOMAIN_COMMAND] + ([DOMAIN_PUBLISH] if self._events.checks_publish else [])
        dropped = revocation.domains_to_drop(checked)
        if DOMAIN_COMMAND in dropped:
            # Every connection goes, actors included: they come back and register again.
            for entry in self.directory.up():
                self._actor_down(entry, "connections reset by a key rotation")
            drop_connections(self._router, self.endpoints["command"])
        self._events.drop(dropped & {DOMAIN_PUBLISH, DOMAIN_SUBSCRIBE})
        for domain in dropped:
            zap.forget(domain)
        result = {
            "identities": len(ring),
            "revoked": sorted(revocation.identities),
            "dropped": sorted(dropped),
        }
        log.info("security_reloaded", by=who, **result)
        self._record(who, protocol.BROKER_SERVICE, "reload", result, "ok")
        return result

    def _load_reload(self) -> tuple[Keyring, Acl, SecurityConfig]:
        if self._zap is None:
            raise ConfigError("security is off on this broker: there is nothing to reload")
        current = self.security
        sec = load_config(self._config_path).security if self._config_path else current
        if (sec.key, sec.key_env) != (current.key, current.key_env):
            raise ConfigError(
                "reload cannot change the broker key or turn CURVE on or off: restart the broker"
            )
        ring = sec.load_keyring()
        acl = sec.access_list(ring.names)
        events = self._events
        unchecked = [
            what
            for what, wanted, running in (
                ("publishing", acl.checks_publish, events.checks_publish),
                ("subscribing", acl.checks_subscribe, events.checks_subscribe),
            )
            if wanted and not running
        ]
        if unchecked:
            raise ConfigError(
                f"the new access list checks {' and '.join(unchecked)}, which the running event "
                "path does not: restart the broker"
            )
        return ring, acl, sec

    def close(self) -> None:
        """Tell every actor the broker is going, fail in-flight requests, close the sockets."""
        if not self._started:
            return
        self._started = False
        if self._ipc_files is not None:
            # While the sockets still listen, so the files are surely ours: a broker starting
            # now finds none and binds its own (``bus.ipc.claim`` refuses a live one's).
            self._ipc_files.remove()
        for entry in self.directory.up():
            identity = entry.identity
            self._fail_all(
                self.directory.mark_down(entry, protocol.REASON_BROKER_STOPPING),
                protocol.REASON_BROKER_STOPPING,
            )
            if identity is not None:
                self._send_quiet(
                    [identity, *protocol.encode_disconnect(protocol.REASON_BROKER_STOPPING)]
                )
            self._publish_presence(entry)
        self._events.close()
        for s in (self._pub, self._monitor, self._router):
            s.close(linger=0)
        if self._zap is not None:
            self._zap.close()
        if self._audit is not None:
            try:
                self._audit.close()
            except StorageError as exc:
                log.error("audit_log_close_failed", error=exc.message)
        if self._own_ctx:
            self._ctx.term()
        log.info("broker_stopped")

    def run(self) -> None:
        """Serve until ``stop()``, then ``close()``; binds first if ``start()`` was not called."""
        if not self._started:
            self.start()
        run_once = self.run_once
        stopping = self._stopping
        try:
            while not stopping.is_set():
                # The wait is capped so that stop() is noticed promptly even with no traffic.
                run_once(_STOP_POLL_S)
        finally:
            self.close()

    def run_once(self, max_wait_s: float = 0.0) -> None:
        """One turn of the loop: wait up to ``max_wait_s`` for messages (less when a deadline or
        a heartbeat is due), handle them, then expire the due deadlines and heartbeat the actors
        if it is time. ``start()`` must have been called."""
        router = self._router
        deadlines = self._deadlines
        now = self._clock()
        wake = self._next_tick if not deadlines else min(self._next_tick, deadlines[0][0])
        wait = min(wake - now, max_wait_s)
        if self._probe_due:
            wait = min(wait, self._probe_after - time.monotonic())
        # Rounded up: a deadline due in under a millisecond must not make this a poll(0). The
        # heap keeps answered requests' entries until they come due (lazy deletion), so under
        # steady load one is almost always that close, and truncating spun the loop.
        ready = self._poller.poll(math.ceil(max(0.0, wait) * 1000))
        for sock, _ in ready:
            if sock is router:
                self._drain_router(router)
            elif sock is self._monitor:
                self._on_monitor_event()
            elif self._zap is not None:
                self._zap.handle_pending()
        if self._probe_due and time.monotonic() >= self._probe_after:
            self._probe_all()
        if self._reload_requested:
            self._reload_requested = False
            with contextlib.suppress(BusError):  # logged; the old keys and access list stay
                self.reload()
        now = self._clock()
        if deadlines and deadlines[0][0] <= now:
            self._expire(now)
        if now >= self._next_tick:
            self._tick(now)
            self._next_tick = now + self.config.heartbeat_s

    # --- message handling -------------------------------------------------------------------

    def _drain(self, router: zmq.Socket[bytes]) -> None:
        # Receives through bus._zmqio (no pyzmq sugar per frame) and, after the first message
        # (the poll said one waits), asks ZMQ_EVENTS before each receive instead of ending on a
        # zmq.Again built per wake-up.
        handle = self._handle
        for i in range(_DRAIN_BATCH):
            if i and not _readable(router):
                return
            try:
                ident, _ = _recv_frame(router, _NOBLOCK)
            except zmq.Again:  # a spurious wake-up
                return
            # The rest of a message is there with its first frame: no wait (and no GIL release).
            frame, more = _recv_frame(router, _NOBLOCK)
            frames: _Frames = [ident, frame]
            if more:
                # Bulk frames are forwarded as zmq.Frame objects: never copied by the broker.
                frames += _recv_rest(router)
            try:
                handle(ident, frame, frames)
            except BusError as exc:
                self._reject(ident, frame, exc)
            except Exception as exc:  # never let one message stop the broker
                log.exception("message_handling_failed")
                self._reject(
                    ident,
                    frame,
                    BadRequest(
                        f"message could not be handled: {exc}", details={"reason": "unhandled"}
                    ),
                )

    def _drain_secure(self, router: zmq.Socket[bytes]) -> None:
        """``_drain`` under CURVE: the routing-id frame is received without copying, for the
        identity (User-Id) the ZAP handler gave its connection."""
        handle = self._handle_secure
        recv = router.recv
        for i in range(_DRAIN_BATCH):
            if i and not _readable(router):
                return
            try:
                first = recv(_NOBLOCK, copy=False)
            except zmq.Again:
                return
            # No ZAP identity on the connection (inproc): "", which no access list knows.
            user = user_id(first) or ""
            ident = first.bytes
            frame, more = _recv_frame(router, _NOBLOCK)  # there with the first frame
            frames: _Frames = [ident, frame]
            if more:
                frames += _recv_rest(router)
            try:
                handle(ident, user, frame, frames)
            except BusError as exc:
                self._reject(ident, frame, exc)
            except Exception as exc:  # never let one message stop the broker
                log.exception("message_handling_failed")
                self._reject(
                    ident,
                    frame,
                    BadRequest(
                        f"message could not be handled: {exc}", details={"reason": "unhandled"}
                    ),
                )

    def _handle_secure(self, ident: bytes, user: str, frame: bytes, frames: _Frames) -> None:
        """``_handle`` with the sender's identity: REQUEST and READY are checked against the
        access list; the rest is bound to a connection already (answers to the requests it
        holds, heartbeats of the service it registered) and handled as without security."""
        kind, header = _split(frame)
        if len(frames) > 2 and kind not in _BULK_KINDS:
            _check_no_bulk(kind, header, frame, frames)
        if kind == _REQUEST:
            self._request_checked(ident, user, frame, header, frames)
        elif kind == _READY:
            self._on_ready(ident, protocol.ready_header(header, frame), frame, user)
        else:
            self._handle(ident, frame, frames)

    def _handle(self, ident: bytes, frame: bytes, frames: _Frames) -> None:
        """Act on one message; ``frame`` is its header, ``frames`` the whole of it (``[ident,
        frame, *bulk]``), forwarded as it is with the identity replaced."""
        kind, header = _split(frame)
        if len(frames) > 2 and kind not in _BULK_KINDS:
            _check_no_bulk(kind, header, frame, frames)
        if kind == _REQUEST:
            self._route_request(ident, frame, header, frames)
        elif kind in _ANSWERS:
            self._route_answer(ident, kind, header, frames)
        elif kind == _HEARTBEAT:
            entry = self.directory.by_identity.get(ident)
            if entry is None:
                # An actor we do not know (the broker restarted): ask it to register again.
                self._send_quiet(
                    [
                        ident,
                        *protocol.encode_disconnect(
                            f"{protocol.REASON_NOT_REGISTERED}; send READY"
                        ),
                    ]
                )
            else:
                entry.last_seen = self._clock()
        elif kind == _CANCEL:
            self._route_cancel(ident, header, frames)
        elif kind == _READY:
            self._on_ready(ident, protocol.ready_header(header, frame), frame)
        elif kind == _DISCONNECT:
            entry = self.directory.by_identity.get(ident)
            if entry is not None:
                self._actor_down(entry, "actor disconnected", orderly=True)
        else:  # HELLO: split() lets through the command-channel kinds only
            self._on_hello(ident, protocol.hello_header(header, frame))

    def _route_request(
        self, ident: bytes, frame: bytes, header: list[Any], frames: _Frames
    ) -> str | None:
        """Forward a REQUEST to its actor (or serve a broker command); return None, or the code
        of the ERROR the caller was answered with instead."""
        msg_id, service = _request_route(header, frame)
        size = sum(map(len, frames[1:])) if len(frames) > 2 else len(frame)
        if size > self.config.max_message_bytes:
            raise BadRequest(
                f"message of {size} bytes exceeds the broker limit of {self.config.max_message_bytes}",
                details={"reason": "too_large", "size": size},
            )
        if service == protocol.BROKER_SERVICE:
            return self._serve_internal(ident, protocol.request_header(header, frame), frames[2:])
        entry = self.directory.by_name.get(service)
        if entry is None:
            code, text = self._unregistered(service)
            return self._error(ident, msg_id, code, text, code)
        if entry.state != UP or entry.identity is None:
            return self._error(
                ident,
                msg_id,
                "unavailable",
                f"service {service!r} is down ({entry.down_reason})",
                "unavailable",
            )
        # ttl_s is checked only now: unknown_service and unavailable come first (PROTOCOL.md §6).
        ttl = _request_ttl(header, frame)
        if ttl is None:
            ttl = self.config.default_timeout_s
        if ttl <= 0:
            return self._error(
                ident,
                msg_id,
                "deadline_exceeded",
                "request arrived with its deadline already passed",
                "deadline",
            )
        if msg_id in self._pending:
            return self._error(
                ident,
                msg_id,
                "bad_request",
                f"message id {msg_id!r} is already in flight",
                "duplicate_id",
            )
        now = self._clock()
        deadline = now + min(ttl, self.config.max_timeout_s)
        pending = Pending(msg_id, ident, entry, deadline, now)
        frames[0] = entry.identity
        try:
            _send_frames(self._router, frames, _NOBLOCK, len(frames) < 3)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EAGAIN:
                return self._error(
                    ident,
                    msg_id,
                    "busy",
                    f"service {service!r} has too many requests queued",
                    "backpressure",
                )
            self._on_send_failure(entry, exc)
            return self._error(
                ident, msg_id, "unavailable", f"service {service!r} cannot be reached", "unroutable"
            )
        self._pending[msg_id] = pending
        entry.inflight[msg_id] = pending
        heapq.heappush(self._deadlines, (deadline, msg_id))
        self.routed["request"] += 1
        return None

    def _request_checked(
        self, ident: bytes, user: str, frame: bytes, header: list[Any], frames: _Frames
    ) -> None:
        """A REQUEST under an access list: refused with ``forbidden`` (nothing reaches the
        actor), or routed; a privileged call is recorded in the audit log either way."""
        acl = self._acl
        assert acl is not None
        msg_id, service, command = _request_target(header, frame)
        entry = self.directory.by_name.get(service)
        declared = entry is not None and command in entry.privileged
        decision = acl.may_call(user, service, command, privileged=declared)
        privileged = declared or self._is_privileged(acl, service, command)
        if not decision:
            self._forbid(ident, msg_id, user, service, command, decision)
            if privileged:
                self._record(user, service, command, None, "forbidden", msg_id, decision.reason)
            return
        if not privileged or self._audit is None:
            self._caller = user
            self._route_request(ident, frame, header, frames)
            return
        args = self._summarize(header, frame, frames)
        if self._audit_failed:
            # Fail closed: no privileged call runs while the audit log cannot be written. The
            # refusal is recorded if it can be, and a record that succeeds ends the failure.
            text = "the audit log cannot be written; privileged calls are refused until it can"
            self._error(ident, msg_id, "storage_error", text, "audit_failed")
            self._record(user, service, command, args, "storage_error", msg_id, text)
            return
        self._caller = user
        try:
            outcome = self._route_request(ident, frame, header, frames)
        except BusError as exc:
            self._record(user, service, command, args, exc.code, msg_id, exc.message)
            raise
        if service == protocol.BROKER_SERVICE and command == "reload":
            return  # reload records itself, with what it revoked
        if outcome is None and service != protocol.BROKER_SERVICE:
            self._audited[msg_id] = _Audited(user, service, command, args)
        else:
            self._record(user, service, command, args, outcome or "ok", msg_id)

    def _is_privileged(self, acl: Acl, service: str, command: str) -> bool:
        """Whether the access list (not the actor) makes ``service.command`` privileged; cached."""
        key = (service, command)
        privileged = self._privileged.get(key)
        if privileged is None:
            if len(self._privileged) >= _PRIVILEGED_CACHE_LIMIT:
                self._privileged.clear()  # hostile command names must not grow it forever
            privileged = self._privileged[key] = acl.is_privileged(service, command)
        return privileged

    def _forbid(
        self,
        ident: bytes,
        msg_id: str,
        user: str,
        service: str,
        command: str,
        decision: Decision,
    ) -> None:
        self.dropped["forbidden"] += 1
        self._rejects(
            "request_forbidden",
            decision.rule,
            identity=user,
            service=service,
            command=command,
            msg_id=msg_id,
        )
        details = {"identity": user, "service": service, "command": command, "rule": decision.rule}
        self._send_quiet(
            [ident, *protocol.encode_error(msg_id, "forbidden", decision.reason, details)]
        )

    # --- audit ---------------------------------------------------------------------------------

    def _summarize(self, header: list[Any], frame: bytes, frames: _Frames) -> Any:
        """The arguments of a privileged call, secrets and bulk data left out. Bulk frames are
        not copied: their references decode as empty bytes, and their total size is noted."""
        bulk = frames[2:]
        try:
            payload = protocol.request_header(header, frame).payload
            args = protocol.unpack_value(payload, [b""] * len(bulk))
        except BusError:
            return "<undecodable>"
        return summarize_arguments(args, bulk_bytes=sum(len(f) for f in bulk))

    def _record(
        self,
        identity: str,
        service: str,
        command: str,
        args: Any,
        outcome: str,
        msg_id: str = "",
        detail: str = "",
    ) -> bool:
        """Append an audit record; False (and privileged calls refused) if it cannot be written."""
        if self._audit is None:
            return True
        try:
            self._audit.record(
                identity, service, command, args, outcome, msg_id=msg_id, detail=detail
            )
        except StorageError as exc:
            if not self._audit_failed:
                log.error("audit_log_failed", error=exc.message)
            self._audit_failed = True
            return False
        if self._audit_failed:
            log.warning("audit_log_recovered")
            self._audit_failed = False
        return True

    def _audit_end(self, msg_id: str, outcome: str) -> None:
        """Record the end of an audited call, if ``msg_id`` is one."""
        audited = self._audited.pop(msg_id, None)
        if audited is not None:
            self._record(
                audited.identity, audited.service, audited.command, audited.args, outcome, msg_id
            )

    def _route_answer(self, ident: bytes, kind: int, header: list[Any], frames: _Frames) -> None:
        """PROGRESS, REPLY or ERROR: forwarded to the caller if ``ident`` holds the request."""
        msg_id = _peek_msg_id(header)
        pending = self._pending.get(msg_id) if msg_id is not None else None
        if pending is None or pending.service.identity != ident:
            # Late (after deadline or cancel) or from a peer that does not hold this request.
            if kind == _PROGRESS:
                self.dropped["late_progress"] += 1
            else:
                self.dropped["late_reply" if pending is None else "wrong_peer"] += 1
            return
        service = pending.service
        service.last_seen = now = self._clock()  # any message is a sign of life
        if kind != _PROGRESS:
            del self._pending[pending.msg_id]
            del service.inflight[pending.msg_id]
            # The answer's latency: one int in a preallocated list (bus.metrics reads it).
            elapsed = now - pending.started
            service.latency[_bucket(_LATENCY_BOUNDS, elapsed)] += 1
            service.latency_sum += elapsed
            if self._audited:
                self._audit_end(pending.msg_id, _outcome(kind, header))
        self._forward(pending.client, frames, _ROUTED_AS[kind])

    def _route_cancel(self, ident: bytes, header: list[Any], frames: _Frames) -> None:
        msg_id = _peek_msg_id(header)
        pending = self._pending.get(msg_id) if msg_id is not None else None
        if pending is None or pending.client != ident:
            self.dropped["cancel_unknown"] += 1
            return
        if pending.service.identity is not None:
            self._forward(pending.service.identity, frames, "cancel")

    def _forward(self, to: bytes, frames: _Frames, what: str) -> None:
        """Send a received message on to ``to`` (its identity frame replaced), counted as ``what``."""
        frames[0] = to
        try:
            _send_frames(self._router, frames, _NOBLOCK, len(frames) < 3)
        except zmq.ZMQError as exc:
            self.dropped["unroutable" if exc.errno == zmq.EHOSTUNREACH else "backpressure"] += 1
            entry = self.directory.by_identity.get(to)
            if entry is not None:
                self._on_send_failure(entry, exc)
            return
        self.routed[what] += 1

    # --- registration and liveness ----------------------------------------------------------

    def _on_ready(
        self, ident: bytes, ready: protocol.ReadyHeader, ready_frame: bytes, owner: str = ""
    ) -> None:
        name = protocol.validate_service_name(ready.service)
        if name == protocol.BROKER_SERVICE:
            raise BadRequest(f"service name {name!r} is reserved for the broker")
        if self._acl is not None and not self._may_register(ident, owner, name):
            return
        info = ready.info
        moved = self.directory.by_identity.get(ident)
        if moved is not None and moved.name != name:
            # One connection serves one service: registering another name abandons the first.
            self._actor_down(moved, "re-registered as another service")
        existing = self.directory.by_name.get(name)
        replaced: bytes | None = None
        if existing is not None and existing.state == UP and existing.identity != ident:
            replaced = existing.identity
            if existing.info.get("pid") != info.get("pid"):
                # A restarted process registers before its predecessor's connection is noticed
                # gone: the predecessor is down all the same, and presence says so before the
                # newcomer's "up", whichever of the two the broker learns first.
                self._actor_down(existing, _REPLACED)
            else:
                # The same process on a new connection: no one went down.
                self._fail_all(list(existing.inflight.values()), _REPLACED)
                existing.inflight.clear()
        entry = self.directory.register(name, ident, info, self._clock(), ready_frame, owner)
        if replaced is not None:
            self._send_quiet([replaced, *protocol.encode_disconnect(_REPLACED)])
        self._send_quiet(
            [ident, *protocol.encode_heartbeat()]
        )  # doubles as the READY acknowledgement
        log.info(
            "actor_up", service=name, kind=entry.kind, pid=info.get("pid"), host=info.get("host")
        )
        self._publish_presence(entry)

    def _may_register(self, ident: bytes, owner: str, name: str) -> bool:
        """Check a READY against the access list and the live owner of the name; a refusal is
        answered with ERROR ``forbidden`` (msg_id ``""``) and recorded in the audit log."""
        assert self._acl is not None
        decision = self._acl.may_register(owner, name)
        existing = self.directory.by_name.get(name)
        if (
            decision
            and existing is not None
            and existing.state == UP
            and existing.identity != ident
            and existing.owner != owner
        ):
            # A hijack, or two identities configured for one name: the live actor keeps it.
            decision = Decision(
                False,
                f"service {name!r} is up under identity {existing.owner!r}; identity "
                f"{owner!r} may not take it over",
                "register",
            )
        if decision:
            return True
        self.dropped["forbidden"] += 1
        self._rejects("registration_refused", decision.rule, identity=owner, service=name)
        self._record(owner, name, "READY", None, "forbidden", "", decision.reason)
        details = {"identity": owner, "service": name, "rule": decision.rule}
        self._send_quiet([ident, *protocol.encode_error("", "forbidden", decision.reason, details)])
        return False

    def _actor_down(self, entry: ServiceEntry, reason: str, *, orderly: bool = False) -> None:
        """Mark ``entry`` down, fail what it held, publish its presence. ``orderly``: the actor
        said DISCONNECT itself (an orderly stop, e.g. of ``linebus up``): logged at info, as
        ``actor_disconnected``; every other way down is a warning ``actor_down``."""
        if entry.state != UP:
            return
        failed = self.directory.mark_down(entry, reason)
        self._fail_all(failed, reason)
        report = log.info if orderly else log.warning
        report(
            "actor_disconnected" if orderly else "actor_down",
            service=entry.name,
            reason=reason,
            failed_requests=len(failed),
        )
        self._publish_presence(entry)

    def _fail_all(self, failed: list[Pending], reason: str) -> None:
        for pending in failed:
            self._pending.pop(pending.msg_id, None)
            if self._audited:
                self._audit_end(pending.msg_id, "unavailable")
            self._error(
                pending.client,
                pending.msg_id,
                "unavailable",
                f"service {pending.service.name!r} went down while handling the request: {reason}",
                "actor_down",
            )

    def _on_send_failure(self, entry: ServiceEntry, exc: zmq.ZMQError) -> None:
        if exc.errno == zmq.EHOSTUNREACH and entry.state == UP:
            self._actor_down(entry, "connection lost")

    def _on_monitor_event(self) -> None:
        try:
            event = parse_monitor_message(self._monitor.recv_multipart(_NOBLOCK))
        except zmq.Again:
            return
        kind = event["event"]
        if kind & _HANDSHAKE_FAILED:
            # A connection that never got in (refused key, garbage): the DISCONNECTED that
            # follows is no actor's, and anyone who can reach the port can cause many.
            self._failed_handshakes = min(self._failed_handshakes + 1, _MAX_FAILED_HANDSHAKES)
        elif kind == zmq.EVENT_DISCONNECTED:
            if self._failed_handshakes:
                self._failed_handshakes -= 1
                return
            # Some peer's connection closed; probe the actors to find out whether it was one,
            # at most one round per _PROBE_ROUND_S however many close.
            self._probe_due = True
            if time.monotonic() >= self._probe_after:
                self._probe_all()

    def _probe_all(self) -> None:
        self._probe_due = False
        self._probe_after = time.monotonic() + _PROBE_ROUND_S
        for entry in self.directory.up():
            self._probe(entry)

    def _probe(self, entry: ServiceEntry) -> None:
        if entry.identity is None:
            return
        try:
            self._router.send_multipart([entry.identity, _HEARTBEAT_FRAME], _NOBLOCK)
        except zmq.ZMQError as exc:
            self._on_send_failure(entry, exc)

    def _tick(self, now: float) -> None:
        self._rejects.tick()  # the summary of a finished window of suppressed log lines
        if self._audit is not None:
            try:
                self._audit.flush()  # "interval": a power cut loses at most about one tick
            except StorageError as exc:
                log.error("audit_log_failed", error=exc.message)
        timeout = self.config.heartbeat_timeout_s
        for entry in self.directory.up():
            if now - entry.last_seen > timeout:
                self._actor_down(entry, f"no heartbeat for {now - entry.last_seen:.1f} s")
            else:
                self._probe(entry)

    def _expire(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, msg_id = heapq.heappop(deadlines)
            pending = self._pending.get(msg_id)
            if pending is None or pending.deadline != deadline:
                continue  # answered already
            del self._pending[msg_id]
            pending.service.inflight.pop(msg_id, None)
            if self._audited:
                self._audit_end(msg_id, "deadline_exceeded")
            self._error(
                pending.client,
                msg_id,
                "deadline_exceeded",
                f"no answer from {pending.service.name!r} before the deadline",
                "deadline",
            )
            if pending.service.identity is not None:
                # The caller has given up; let the actor stop working on it.
                self._send_quiet([pending.service.identity, *protocol.encode_cancel(msg_id)])

    # --- answers from the broker itself -------------------------------------------------------

    def _unregistered(self, name: str) -> tuple[str, str]:
        """The error code and message for ``name``, which no actor has registered: ``unavailable``
        for a name that is coming (the line's config names it, or the broker started less than
        ``registration_grace_s`` ago), else ``unknown_service`` (PROTOCOL.md §6)."""
        if name in self.expected:
            return "unavailable", f"service {name!r} has not registered yet (the line runs it)"
        age = self._clock() - self._started_at_clock
        if age < self.config.registration_grace_s:
            return (
                "unavailable",
                f"service {name!r} has not registered yet (the broker started {age:.1f} s ago)",
            )
        return "unknown_service", f"no service named {name!r} has registered"

    def _error(self, ident: bytes, msg_id: str, code: str, text: str, drop_reason: str) -> str:
        """Answer ``msg_id`` with an ERROR, count the drop; return ``code``."""
        self.dropped[drop_reason] += 1
        self._send_quiet([ident, *protocol.encode_error(msg_id, code, text)])
        return code

    def _reject(self, ident: bytes, frame: bytes, exc: BusError) -> None:
        # Counter keys are a small fixed set: free-text reasons from a hostile peer must not
        # grow the table without bound.
        reason = exc.details.get("reason")
        key = (
            reason
            if reason in _STABLE_REASONS
            else ("malformed" if exc.code == "bad_request" else exc.code)
        )
        self.dropped[key] += 1
        msg_id = protocol.error_msg_id(frame)
        # Rate-limited: anyone who can reach the port can send garbage.
        self._rejects("message_rejected", key, code=exc.code, detail=exc.message, msg_id=msg_id)
        self._send_quiet(
            [ident, *protocol.encode_error(msg_id, exc.code, exc.message, exc.details)]
        )

    def _send_quiet(self, frames: list[Any]) -> None:
        try:
            _send_frames(self._router, frames)
        except zmq.ZMQError:
            self.dropped["unroutable"] += 1

    def _on_zap_refused(self, domain: str, address: str, reason: str) -> None:
        """A handshake the ZAP handler refused: logged, rate-limited (anyone can cause them)."""
        self._rejects("handshake_refused", reason, domain=domain, address=address)

    def _on_hello(self, ident: bytes, hello: protocol.HelloHeader) -> None:
        supported = list(protocol.SUPPORTED_VERSIONS)
        common = sorted(set(hello.versions) & set(supported))
        if not common:
            raise UnsupportedVersion(
                f"no common protocol version: peer speaks {hello.versions}, broker {supported}",
                details={"supported": supported},
            )
        info = {
            "broker": "linebus",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            **self.endpoints,
        }
        self._send_quiet([ident, *protocol.encode_hello([common[-1]], info)])

    def _serve_internal(
        self, ident: bytes, request: protocol.RequestHeader, bulk: _Frames
    ) -> str | None:
        try:
            args = protocol.unpack_value(request.payload, bulk)
            args = {} if args is None else args
            if not isinstance(args, dict):
                raise InvalidArguments.about(
                    f"arguments must be a map of name to value, got {type(args).__name__}",
                    argument=None,
                    problem="type",
                    expected="map",
                )
            result = self._internal_command(request.command, args)
        except BusError as exc:
            self._send_quiet(
                [ident, *protocol.encode_error(request.msg_id, exc.code, exc.message, exc.details)]
            )
            return exc.code
        self.routed["internal"] += 1
        self._send_quiet([ident, *protocol.encode_reply(request.msg_id, result)])
        return None

    def _internal_command(self, command: str, args: dict[str, Any]) -> Any:
        if command == "ping":
            return {"pong": True, "time": time.time(), "version": protocol.VERSION}
        if command == "services":
            return [
                e.summary() for e in sorted(self.directory.by_name.values(), key=lambda e: e.name)
            ]
        if command == "describe":
            name = args.get("service")
            if not isinstance(name, str):
                raise invalid_argument(args, "service", "str")
            entry = self.directory.by_name.get(name)
            if entry is None:
                code, text = self._unregistered(name)
                raise Unavailable(text) if code == "unavailable" else UnknownService(text)
            description = self.directory.description(entry)
            return {
                **entry.summary(),
                "doc": description.get("doc", ""),
                "commands": description.get("commands", {}),
            }
        if command == "lookup":
            return lookup(self.directory, args, self._acl, self._caller)
        if command == "stats":
            return self.stats()
        if command == "probe":
            # Lets a subscriber learn that its subscription has reached the broker.
            topic = args.get("topic")
            if not isinstance(topic, str) or not topic.startswith("_probe."):
                raise invalid_argument(args, "topic", "str starting with '_probe.'")
            self._emit(
                protocol.encode_event(
                    topic, protocol.BROKER_SERVICE, self._epoch, 0, time.time(), None
                )
            )
            return None
        if command == "report_subscriber":
            self.subscribers.report(args, self._caller)
            return None
        if command == "reload":
            return self.reload(by=self._caller)
        raise UnknownCommand(
            f"the broker has no command {command!r} (has: {_BROKER_COMMANDS})",
            details={"command": command},
        )

    @property
    def handshakes(self) -> dict[str, int]:
        """CURVE handshakes by outcome (``accepted``, or the ZAP handler's refusal reason);
        empty without CURVE. Safe from another thread (bus.metrics): one C-level copy."""
        return dict(self._zap.counts) if self._zap is not None else {}

    @property
    def event_counts(self) -> dict[str, int]:
        """What the checked event path counted (``forwarded``, ``forbidden_publish``,
        ``forbidden_subscribe``, ``malformed``); empty under the C proxy, which counts nothing,
        and before ``start()``. Safe from another thread (bus.metrics)."""
        stats = self._events.stats() if self._started else {}
        return {key: value for key, value in stats.items() if type(value) is int}

    def stats(self) -> dict[str, Any]:
        """Counters of what was routed and every drop by reason, plus the current load."""
        events = self._events.stats()
        stats = {
            "uptime_s": time.time() - self._started_at,
            "routed": dict(self.routed),
            "dropped": dict(self.dropped),
            "inflight": len(self._pending),
            "services_up": len(self.directory.up()),
            "services_known": len(self.directory.by_name),
            "events": events.get("note") or events,
            "subscribers": self.subscribers.rows(),
        }
        if self._zap is not None:
            stats["security"] = {
                "curve": True,
                "identities": len(self._zap.keyring),
                "handshakes": dict(self._zap.counts),
                "audit_log": str(self.security.audit_log) if self.security.audit_log else None,
                "audit_failing": self._audit_failed,
            }
        return stats

    def _publish_presence(self, entry: ServiceEntry) -> None:
        topic = f"presence.{entry.name}"
        seq = self._presence_seq.get(topic, 0) + 1
        self._presence_seq[topic] = seq
        data = {
            "service": entry.name,
            "kind": entry.kind,
            "state": entry.state,
            "reason": entry.down_reason,
            "since": entry.since,
        }
        self._emit(
            protocol.encode_event(
                topic, protocol.BROKER_SERVICE, self._epoch, seq, time.time(), data
            )
        )

    def _emit(self, event: bytes) -> None:
        """Send one of the broker's own events; never blocks (a full queue drops it)."""
        try:
            self._pub.send(event, _NOBLOCK)
        except zmq.Again:
            self.dropped["event_backpressure"] += 1


def serve(
    config_path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, str] | None = None,
) -> None:
    """Run a broker from a line's config until SIGINT or SIGTERM; SIGHUP reloads its security.

    Args:
        config_path: The line's TOML file: ``[broker]`` and ``[security]``, re-read by a reload.
            None: the defaults (loopback, no security).
        overrides: ``command``/``publish``/``subscribe`` endpoints, and ``metrics`` (the
            ``host:port`` of ``/metrics``), replacing the config's.

    Raises:
        ConfigError: the config, a key or the access list is unusable, or the broker would be
            exposed without CURVE (KeyFileError and AclError are ConfigErrors).
    """
    line = load_config(config_path) if config_path else None
    config = line.broker if line else BrokerConfig()
    if overrides:
        config = replace(
            config,
            command=overrides.get("command") or config.command,
            publish=overrides.get("publish") or config.publish,
            subscribe=overrides.get("subscribe") or config.subscribe,
            metrics=overrides.get("metrics") or config.metrics,
        )
    apply_nice(config.nice, "[broker]")  # before the first thread (ZeroMQ's) starts
    broker = Broker(
        config,
        security=line.security if line else None,
        config_path=config_path,
        expected=[actor.name for actor in line.actors] if line else (),
    )
    metrics = None
    if config.metrics is not None:
        from bus.metrics import MetricsServer  # prometheus-client: only for a broker that serves it

        metrics = MetricsServer(broker, config.metrics)
        metrics.start()
    try:
        broker.start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: broker.stop())
        signal.signal(signal.SIGHUP, lambda *_: broker.request_reload())
        broker.run()
    finally:
        if metrics is not None:
            metrics.close()


def _check_no_bulk(kind: int, header: list[Any], frame: bytes, frames: _Frames) -> None:
    """Refuse bulk frames after a kind that carries none (docs/PROTOCOL.md §3), once the header
    itself is checked: a malformed header is the error to report first, as ``decode`` does."""
    protocol.decode([frame])
    raise protocol.bulk_not_allowed(kind, len(frames) - 2)


def _outcome(kind: int, header: list[Any]) -> str:
    """The audit outcome of a final answer: ``ok`` for a REPLY, else the ERROR's code."""
    if kind == _REPLY:
        return "ok"
    try:
        return protocol.error_header(header).code
    except BusError:
        return "error"


def invalid_argument(args: dict[str, Any], argument: str, expected: str) -> BusError:
    """An ``invalid_arguments`` error about ``argument`` of ``args``: missing, or not
    ``expected`` (details as the actors give them, docs/PROTOCOL.md §10)."""
    if argument not in args:
        return InvalidArguments.about(
            f"missing required argument {argument!r} ({expected})",
            argument=argument,
            problem="missing",
            expected=expected,
        )
    got = args[argument]
    return InvalidArguments.about(
        f"argument {argument!r} must be {expected}, got {type(got).__name__}",
        argument=argument,
        problem="type" if not isinstance(got, str) else "value",
        expected=expected,
    )
