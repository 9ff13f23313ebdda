"""The synchronous Python client: call actors' commands and subscribe to events.

    from bus.client import Client

    with Client() as bus:                         # LINEBUS_ENDPOINT or tcp://127.0.0.1:7750
        print(bus.call("fr1", "FR_GetDllVersion"))
        job = bus.start("fr1", "FR_SendFile", path="fw.frb", data=image)
        for update in job.updates():               # progress, until the job ends
            print(update)
        job.result()
        for event in bus.subscribe("presence."):
            print(event.topic, event.data)

A ``Client`` is not thread-safe (ZeroMQ sockets are not): use one per thread, or ``AsyncClient``.

On a secured line (CURVE) a client needs its own key pair and the broker's public key. By default
they come from the environment (``ClientKeys.load``)::

    LINEBUS_KEY_FILE=keys/alice.key_secret        # or LINEBUS_KEY=<40 z85 characters>
    LINEBUS_BROKER_KEY_FILE=keys/broker.key       # or LINEBUS_BROKER_KEY=<40 z85 characters>

or are given as ``Client(keys=ClientKeys.load(key_file=..., broker_key_file=...))``. A key that is
configured but missing or unreadable raises ``KeyFileError`` at once; there is no fallback to
plaintext. A broker that refuses the handshake (unknown or revoked key, or a plaintext client on a
secured broker) fails the call at once with ``Unauthenticated``, not with a timeout.

Imports only pyzmq, msgpack, ``bus.protocol``/``bus.errors`` and the client half of
``bus.security`` (``keys``, ``curve``: the standard library and pyzmq), as a test proves, so it
can ship alone.
"""

from __future__ import annotations

import collections
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import zmq
from zmq.utils.monitor import parse_monitor_message

from bus import _zmqio, protocol
from bus._calls import (
    CallCore,
    CallState,
    GapRepair,
    GapTracker,
    LossReport,
    ProgressCallback,
    TrackedEvent,
)
from bus.errors import (
    BrokerUnreachable,
    BusError,
    ConfigError,
    DeadlineExceeded,
    Unauthenticated,
    Unavailable,
)
from bus.security.curve import secure_client
from bus.security.errors import KeyFileError
from bus.security.keys import KeyPair, load_keypair, load_public_key

__all__ = [
    "DEFAULT_SUBSCRIPTION_QUEUE",
    "ENV_BROKER_KEY",
    "ENV_BROKER_KEY_FILE",
    "ENV_KEY",
    "ENV_KEY_FILE",
    "Call",
    "Client",
    "ClientKeys",
    "HandshakeWatch",
    "KeysArg",
    "Subscription",
    "connect_endpoint",
    "default_endpoints",
    "queue_options",
]

# The hot path's frame I/O without pyzmq's Python layer (bus._zmqio).
_NOBLOCK = _zmqio.NOBLOCK
_send_frames = _zmqio.send_frames
_readable = _zmqio.readable
_recv_frame = _zmqio.recv_frame
_recv_rest = _zmqio.recv_rest

#: The deadline of a request sent with ``notify`` (nobody waits for its answer).
NOTIFY_TTL_S = 5.0

#: How often an idle subscription looks whether the broker refused its handshake, in seconds.
REFUSAL_CHECK_S = 0.5

#: The environment variables a client, an actor and the CLI take their keys from.
ENV_KEY_FILE = "LINEBUS_KEY_FILE"  # our own secret certificate file
ENV_KEY = "LINEBUS_KEY"  # our own secret key, 40 z85 characters
ENV_BROKER_KEY_FILE = "LINEBUS_BROKER_KEY_FILE"  # the broker's public certificate file
ENV_BROKER_KEY = "LINEBUS_BROKER_KEY"  # the broker's public key, 40 z85 characters


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """What a peer of a secured broker needs: its own key pair and the broker's public key.

    ``source`` says where the own key came from (a file path or ``$VARIABLE``), for messages;
    the secret key never appears in a repr or a message.
    """

    own: KeyPair
    broker: bytes
    source: str = ""

    @property
    def public(self) -> str:
        """Our public key as text (what the broker's keys directory must hold for us)."""
        return self.own.public.decode("ascii")

    def secure(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` (not yet connected) a CURVE client of the broker."""
        secure_client(sock, self.own, self.broker)

    @classmethod
    def load(
        cls,
        *,
        key_file: str | os.PathLike[str] | None = None,
        broker_key_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ClientKeys | None:
        """Our keys from the files given, else from the environment; None when no key is
        configured anywhere (a plaintext client).

        Each half comes from the file given, else ``LINEBUS_KEY_FILE`` / ``LINEBUS_KEY``
        (``LINEBUS_BROKER_KEY_FILE`` / ``LINEBUS_BROKER_KEY`` for the broker's public key).

        Raises:
            KeyFileError: a key is configured but missing, unreadable, too open or malformed;
                both variables of one half are set; or one half is configured without the other.
        """
        env = os.environ if environ is None else environ
        own_source, own_kind = _pick(key_file, env, ENV_KEY_FILE, ENV_KEY)
        broker_source, broker_kind = _pick(
            broker_key_file, env, ENV_BROKER_KEY_FILE, ENV_BROKER_KEY
        )
        if own_source is None and broker_source is None:
            return None
        if own_source is None:
            raise KeyFileError(
                f"${ENV_KEY_FILE}",
                "missing",
                f"the broker's key is given ({broker_source}) but not our own: set "
                f"{ENV_KEY_FILE} (or --key) to this client's secret key file",
            )
        if broker_source is None:
            raise KeyFileError(
                f"${ENV_BROKER_KEY_FILE}",
                "missing",
                f"our key is given ({own_source}) but not the broker's public key: set "
                f"{ENV_BROKER_KEY_FILE} (or --broker-key) to the broker's .key file",
            )
        own = (
            load_keypair(file=own_source)
            if own_kind == "file"
            else load_keypair(env=ENV_KEY, environ=env)
        )
        broker = (
            load_public_key(file=broker_source)
            if broker_kind == "file"
            else load_public_key(env=ENV_BROKER_KEY, environ=env)
        )
        return cls(own, broker, own_source)


def _pick(
    given: str | os.PathLike[str] | None, env: Mapping[str, str], file_var: str, value_var: str
) -> tuple[str | None, str]:
    """Where one half of the keys comes from: (file path or ``$VAR``, "file" or "env")."""
    if given is not None:
        return os.fspath(given), "file"
    path, value = env.get(file_var), env.get(value_var)
    if path and value:
        raise KeyFileError(
            f"${file_var}", "malformed", f"both ${file_var} and ${value_var} are set: keep one"
        )
    if path:
        return path, "file"
    if value:
        return f"${value_var}", "env"
    return None, ""


#: What a client's ``keys`` argument takes: keys, None (from the environment), False (plaintext).
KeysArg = ClientKeys | Literal[False] | None


def resolve_keys(keys: KeysArg) -> ClientKeys | None:
    """The keys given; None: those of the environment; False: none (plaintext). None back
    means plaintext."""
    if keys is False:
        return None
    return keys if keys is not None else ClientKeys.load()


#: Monitor events that end a handshake (the others are not asked for).
HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
#: Monitor events of a client's command socket: the handshakes, and the connection closing
#: (calls in flight then fail as ``CallCore.connection_lost`` says).
CALL_EVENTS = HANDSHAKE_EVENTS | zmq.EVENT_DISCONNECTED
_SUCCEEDED = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
_FAILED_AUTH = int(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_FAILED_PROTOCOL = int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
_MECHANISM_MISMATCH = int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)


class HandshakeWatch:
    """Reads a socket's monitor events and tells when the broker refused our handshake.

    libzmq does not retry a connection whose handshake the broker refused, and sends on it
    only wait: without this, a client with an unknown, revoked or missing key would wait for
    its deadline. Sans-io: ``on_event`` takes one monitor message (its frames); the sync
    client reads them with ``drain``, the asyncio client and the actor in their own loops.

    Args:
        endpoint: The broker endpoint the socket connects to (for the message).
        keys: Our keys, or None for a plaintext peer.
        what: Which connection this is, for the message ("commands", "events").
        on_connection: Called with False when the connection closes (``EVENT_DISCONNECTED``,
            if the monitor asks for it: ``CALL_EVENTS``) and True when a handshake succeeds.
    """

    def __init__(
        self,
        endpoint: str,
        keys: ClientKeys | None,
        what: str = "commands",
        on_connection: Callable[[bool], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.keys = keys
        self.what = what
        self._on_connection = on_connection
        #: The refusal of the last handshake, None once one succeeded (or none ended yet).
        self.refused: Unauthenticated | None = None

    def reset(self) -> None:
        """Forget the last refusal (before connecting again)."""
        self.refused = None

    def on_event(self, frames: list[bytes]) -> Unauthenticated | None:
        """Take one monitor message; return the refusal it reports, if it reports one."""
        message = parse_monitor_message(frames)
        event, value = int(message["event"]), int(message["value"])
        if event == _DISCONNECTED:
            if self._on_connection is not None:
                self._on_connection(False)
            return None
        if event == _SUCCEEDED:
            self.refused = None
            if self._on_connection is not None:
                self._on_connection(True)
            return None
        self.refused = self._refusal(event, value)
        return self.refused

    def drain(self, monitor: zmq.Socket[Any]) -> Unauthenticated | None:
        """Read every waiting monitor message (never blocks); return the refusal, if any."""
        while True:
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return self.refused
            self.on_event(frames)

    def _refusal(self, event: int, value: int) -> Unauthenticated:
        keys = self.keys
        where = f"the broker at {self.endpoint} ({self.what})"
        details: dict[str, Any] = {"endpoint": self.endpoint}
        if keys is not None:
            details.update(key=keys.public, key_source=keys.source)
        if keys is None:
            # A plaintext peer fails a handshake only with a broker that wants a mechanism it
            # lacks (libzmq reports a mechanism mismatch, or no detail when the broker closes first).
            reason = "key_required"
            message = (
                f"{where} is secured (CURVE) and this client has no key: set {ENV_KEY_FILE}"
                f" and {ENV_BROKER_KEY_FILE} (or --key and --broker-key)"
            )
        elif event == _FAILED_AUTH:
            reason = "refused_key"
            message = (
                f"{where} refused our key {keys.source} (public key {keys.public}): it is not"
                " among the broker's known keys, or it was revoked"
            )
        elif event == _FAILED_PROTOCOL and value == _MECHANISM_MISMATCH:
            reason = "broker_not_secured"
            message = f"{where} does not use CURVE, but this client has a key ({keys.source})"
        else:
            reason = "handshake_failed"
            message = (
                f"{where}: the CURVE handshake failed; is {ENV_BROKER_KEY_FILE} (or --broker-key)"
                " the public key of this broker?"
            )
        details["reason"] = reason
        return Unauthenticated(message, details=details)


class _Monitored:
    """A sync socket's handshake monitor: ``check`` raises the broker's refusal, if it refused."""

    def __init__(
        self, sock: zmq.Socket[Any], watch: HandshakeWatch, events: int = HANDSHAKE_EVENTS
    ) -> None:
        self.watch = watch
        self.socket: zmq.Socket[Any] = sock.get_monitor_socket(events)
        self._sock = sock

    def refused(self) -> Unauthenticated | None:
        """The refusal of the last handshake, after reading the waiting events."""
        return self.watch.drain(self.socket)

    def close(self) -> None:
        """Stop monitoring (before the socket is closed)."""
        if not self._sock.closed:
            self._sock.disable_monitor()
        self.socket.close(linger=0)


def connect_endpoint(
    sock: zmq.Socket[Any], endpoint: str, release: Callable[[], None] | None = None
) -> None:
    """``sock.connect(endpoint)``; an endpoint ZeroMQ cannot use (``garbage``, ``tcp://``) is
    raised as ``ConfigError`` naming it, after ``release()`` (the socket's monitor, say) and
    closing ``sock``, instead of leaking them with a bare ``zmq.ZMQError``."""
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        if release is not None:
            release()
        sock.close(linger=0)
        raise ConfigError(
            f"{endpoint!r} is not a usable broker endpoint ({exc}); expected tcp://host:port "
            "or ipc://path",
            details={"endpoint": endpoint},
        ) from exc


def default_endpoints(
    endpoint: str | None = None, subscribe_endpoint: str | None = None
) -> tuple[str, str]:
    """Resolve the command and subscribe endpoints from arguments, environment, or defaults.

    With only a command endpoint ``tcp://host:P``, subscribers go to ``tcp://host:P+2``, the
    default layout of a broker; with ``ipc://DIR/command``, to ``ipc://DIR/subscribe``, the
    layout of a broker's ``ipc_dir``.
    """
    command = endpoint or os.environ.get("LINEBUS_ENDPOINT") or protocol.DEFAULT_COMMAND_ENDPOINT
    subscribe = subscribe_endpoint or os.environ.get("LINEBUS_SUBSCRIBE")
    if not subscribe:
        subscribe = protocol.subscribe_beside(command) or protocol.DEFAULT_SUBSCRIBE_ENDPOINT
    return command, subscribe


class Call:
    """A request in flight, from ``Client.start``: read its progress, cancel it, get its result."""

    def __init__(self, client: Client, state: CallState) -> None:
        self._client = client
        self._state = state

    @property
    def msg_id(self) -> str:
        """The request's message id (appears in the actor's and broker's logs)."""
        return self._state.msg_id

    @property
    def done(self) -> bool:
        """True once a result or error has arrived."""
        return self._state.done

    def updates(self, timeout: float | None = None) -> Iterator[Any]:
        """Yield progress updates as they arrive, until the call ends (then call ``result``)."""
        state = self._state
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            while state.progress:
                yield state.progress.pop(0)
            if state.done:
                return
            limit = state.deadline if end is None else min(end, state.deadline)
            self._client._pump_once(limit, state)
            if end is not None and time.monotonic() >= end and not state.progress:
                return

    def cancel(self) -> None:
        """Ask the actor to stop this command; ``result()`` then raises ``Cancelled``."""
        if not self._state.done:
            self._client._send(protocol.encode_cancel(self._state.msg_id))

    def result(self) -> Any:
        """Wait for the end of the call; return its result or raise its typed error."""
        state = self._state
        while not state.done:
            self._client._pump_once(state.deadline, state)
        return state.outcome()


#: Events a subscription holds in this process by default (ZeroMQ's RCVHWM).
DEFAULT_SUBSCRIPTION_QUEUE = 100_000
#: The kernel receive buffer of a subscription given a ``max_queue`` (bytes).
_BOUNDED_RCVBUF = 256 * 1024


def queue_options(max_queue: int | None) -> dict[int, int]:
    """The SUB socket options that bound what a subscription holds of events not yet read.

    None: ``DEFAULT_SUBSCRIPTION_QUEUE`` events, and the kernel's receive buffer autotuned (on
    Linux up to ``net.ipv4.tcp_rmem``'s maximum, 6 to 32 MiB). A number: that many events, and a
    fixed 256 KiB receive buffer, so that a subscriber that stops reading holds little and the
    broker's own bound (``subscriber_queue``) takes over soon after. Set them before connecting.

    Raises:
        ValueError: ``max_queue`` is below 1.
    """
    if max_queue is None:
        return {zmq.RCVHWM: DEFAULT_SUBSCRIPTION_QUEUE}
    if max_queue < 1:
        raise ValueError(f"max_queue must be at least 1, not {max_queue}")
    return {zmq.RCVHWM: max_queue, zmq.RCVBUF: _BOUNDED_RCVBUF}


class Subscription:
    """An iterator of events whose topic starts with one of the prefixes; detects gaps.

    Each event is a ``TrackedEvent``; its ``missed`` says how many events of that topic from that
    publisher were lost just before it. ``missed_total`` sums them.

    With ``repair``, a gap is repaired before the event that revealed it is delivered: the
    missed events are asked of their publisher (its built-in ``replay``, within
    ``repair_timeout`` per call) and delivered first, in order; what its ring no longer holds
    (or a publisher that cannot answer) stays lost, counted in the next event's ``missed``.
    ``repaired_total`` counts the events recovered.

    ``max_queue`` bounds what this process holds of events not yet read (``queue_options``).
    """

    def __init__(
        self,
        client: Client,
        prefixes: tuple[str, ...],
        timeout: float | None,
        *,
        repair: bool = False,
        repair_timeout: float = 2.0,
        max_queue: int | None = None,
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._tracker = GapTracker()
        self._repair = repair
        self._repair_timeout = repair_timeout
        self._ready: collections.deque[TrackedEvent] = collections.deque()
        #: Events recovered by repairing gaps (not counted in ``missed_total``).
        self.repaired_total = 0
        self.prefixes = prefixes
        self._loss = LossReport(prefixes)
        options = queue_options(max_queue)
        sock = client._ctx.socket(zmq.SUB)
        sock.linger = 0
        for option, value in options.items():
            sock.setsockopt(option, value)
        for prefix in prefixes or ("",):
            sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        if client.keys is not None:
            client.keys.secure(sock)
        self._monitor = _Monitored(
            sock, HandshakeWatch(client.subscribe_endpoint, client.keys, "events")
        )
        connect_endpoint(sock, client.subscribe_endpoint, self._monitor.close)
        self._sock = sock

    def _check_refused(self) -> None:
        """Raise ``Unauthenticated`` if the broker refused this subscription's handshake."""
        refused = self._monitor.refused()
        if refused is not None:
            raise refused

    @property
    def missed_total(self) -> int:
        """Events detected as lost (and not recovered) since the subscription began."""
        return self._tracker.missed_total

    def report(self, *, now: bool = False) -> None:
        """Tell the broker what this subscription missed and repaired, if that changed since
        the last report and (unless ``now``) the last is a second old; never blocks. Done after
        every gap, while idle and on close; ``linebus stats`` shows it (``subscribers``)."""
        args = self._loss.args(self.missed_total, self.repaired_total, now=now)
        if args is not None and self._client.notify(
            protocol.BROKER_SERVICE, "report_subscriber", args
        ):
            self._loss.sent(args)

    def _gap(self, event: TrackedEvent) -> list[TrackedEvent]:
        """``event``, which revealed a gap: repaired if asked, then reported."""
        events = self._repaired(event) if self._repair else [event]
        self.report()
        return events

    def _repaired(self, event: TrackedEvent) -> list[TrackedEvent]:
        """``event`` preceded by what its gap's publisher still had (see the class docstring)."""
        repair = GapRepair(event)
        while (args := repair.args()) is not None:
            try:
                result = self._client.call(event.src, "replay", args, timeout=self._repair_timeout)
            except BusError as exc:
                repair.take(error=exc)
            else:
                repair.take(result)
        self._tracker.missed_total -= repair.recovered
        self.repaired_total += repair.recovered
        return repair.events()

    def wait_ready(self, timeout: float = 5.0) -> None:
        """Return once the broker is forwarding to this subscription (subscriptions propagate
        asynchronously in ZeroMQ); raises DeadlineExceeded after ``timeout``."""
        token = f"_probe.{protocol.new_id_prefix()}"
        self._sock.setsockopt(zmq.SUBSCRIBE, token.encode())
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                self._client.call(
                    protocol.BROKER_SERVICE,
                    "probe",
                    topic=token,
                    timeout=max(0.1, end - time.monotonic()),
                )
                if self._sock.poll(100):
                    frame = self._sock.recv()
                    if frame.startswith(token.encode()):
                        return
                    self._pushback = frame
                    return
                self._check_refused()
            raise DeadlineExceeded(f"subscription to {self.prefixes} not active within {timeout} s")
        finally:
            self._sock.setsockopt(zmq.UNSUBSCRIBE, token.encode())

    _pushback: bytes | None = None

    def next(self, timeout: float | None = None) -> TrackedEvent | None:
        """Return the next event, or None if none arrives within ``timeout`` (None: the
        subscription's own timeout, and if that is None too, wait forever)."""
        sock = self._sock
        if self._ready:
            return self._ready.popleft()
        while True:
            if self._pushback is not None:
                frame, self._pushback = self._pushback, None
            else:
                try:
                    frame = sock.recv(
                        zmq.NOBLOCK
                    )  # no poll() while events are queued: the hot path
                except zmq.Again:
                    limit = self._timeout if timeout is None else timeout
                    if not self._poll(limit):
                        return None
                    frame = sock.recv()
            event = self._tracker.decode(frame)
            if event is not None:
                if event.missed:
                    self._ready.extend(self._gap(event))
                    return self._ready.popleft()
                return event

    def _poll(self, limit: float | None) -> bool:
        """Wait up to ``limit`` seconds (None: forever) for an event; False if none came.

        Looks at the handshake monitor at least every ``REFUSAL_CHECK_S``, so a subscription the
        broker refused raises ``Unauthenticated`` instead of waiting in silence.
        """
        end = None if limit is None else time.monotonic() + limit
        while True:
            step = REFUSAL_CHECK_S if end is None else min(REFUSAL_CHECK_S, end - time.monotonic())
            if self._sock.poll(max(0.0, step) * 1000):
                return True
            self._check_refused()
            self.report()
            if end is not None and time.monotonic() >= end:
                return False

    def __iter__(self) -> Iterator[TrackedEvent]:
        """Yield events until none arrives within the subscription's timeout (None: never end)."""
        # The subscriber's hot path: a blocking recv bounded by RCVTIMEO, like a bare SUB loop.
        # While idle, the wait is cut into steps of at most REFUSAL_CHECK_S, and each empty
        # step looks at the handshake monitor (see ``_poll``).
        sock = self._sock
        decode = self._tracker.decode
        timeout = self._timeout
        steps = 0 if timeout is None else max(1, math.ceil(timeout / REFUSAL_CHECK_S))
        step_s = REFUSAL_CHECK_S if timeout is None else timeout / steps
        sock.rcvtimeo = max(1, round(step_s * 1000))
        again = zmq.Again
        idle = 0
        while self._ready:  # left by a ``next`` that repaired a gap
            yield self._ready.popleft()
        try:
            while True:
                if self._pushback is not None:
                    frame, self._pushback = self._pushback, None
                else:
                    try:
                        frame = sock.recv()
                    except again:
                        self._check_refused()
                        self.report()
                        idle += 1
                        if idle == steps:
                            return
                        continue
                    idle = 0
                event = decode(frame)
                if event is not None:
                    if event.missed:
                        yield from self._gap(event)
                    else:
                        yield event
        finally:
            sock.rcvtimeo = -1

    def close(self) -> None:
        """Stop receiving (and report what was missed, if that is news)."""
        if not self._sock.closed:
            self.report(now=True)
            self._monitor.close()
            self._sock.close(linger=0)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """A connection to a linebus broker.

    Args:
        endpoint: Broker command endpoint; default ``LINEBUS_ENDPOINT`` or ``tcp://127.0.0.1:7750``.
        subscribe_endpoint: Where events are read; default ``LINEBUS_SUBSCRIBE``, or beside the
            command endpoint (``bus.protocol.subscribe_beside``).
        timeout: Default deadline of a call, in seconds.
        keys: Our CURVE keys for a secured broker; None: from the environment
            (``ClientKeys.load``), and plaintext if no key is configured there; False:
            plaintext whatever the environment says.

    Raises:
        KeyFileError: a key is configured but cannot be used (never a fallback to plaintext).
        ConfigError: ``endpoint`` (or ``LINEBUS_ENDPOINT``) is no ZeroMQ endpoint
            (``details["endpoint"]``).
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        subscribe_endpoint: str | None = None,
        timeout: float = 10.0,
        ctx: zmq.Context[Any] | None = None,
        keys: KeysArg = None,
    ) -> None:
        self.endpoint, self.subscribe_endpoint = default_endpoints(endpoint, subscribe_endpoint)
        self._closed = True  # until the socket exists (a bad key fails before it)
        self.keys = resolve_keys(keys)
        self._ctx = ctx or zmq.Context.instance()
        self._core = CallCore(timeout)
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = sock.rcvhwm = 100_000
        # Never queue requests for an absent broker: a request delivered after its caller gave
        # up could still run on a device. Sends wait (with a deadline) for a live connection.
        sock.immediate = 1
        if self.keys is not None:
            self.keys.secure(sock)
        self._sock = sock
        watch = HandshakeWatch(self.endpoint, self.keys, on_connection=self._on_connection)
        self._monitor = _Monitored(sock, watch, CALL_EVENTS)
        connect_endpoint(sock, self.endpoint, self._monitor.close)
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(self._monitor.socket, zmq.POLLIN)
        self._closed = False

    # --- calls ------------------------------------------------------------------------------

    def call(
        self,
        service: str,
        command: str,
        /,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``command`` on ``service`` and return its result.

        Arguments are given as keywords, or as ``args`` when a name clashes with these parameters.

        Raises:
            BusError: the typed error of the failure (``UnknownService``, ``InvalidArguments``,
                ``DeadlineExceeded``, ``Unavailable``, ``DeviceFault``...).
        """
        state = self._start(service, command, args, kwargs, timeout, progress)
        while not state.done:
            self._pump_once(state.deadline, state)
        return state.outcome()

    def start(
        self,
        service: str,
        command: str,
        /,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Call:
        """Send a request and return at once with a ``Call`` to follow, cancel or wait on."""
        return Call(self, self._start(service, command, args, kwargs, timeout, None))

    def _start(
        self,
        service: str,
        command: str,
        args: dict[str, Any] | None,
        kwargs: dict[str, Any],
        timeout: float | None,
        progress: ProgressCallback | None,
    ) -> CallState:
        if self._closed:
            raise Unavailable("client is closed")
        if _readable(self._monitor.socket):
            # Apply what happened to the connection while no call was pumping (a broker
            # restart), so a request sent now on the new connection is not taken for lost.
            refused = self._monitor.refused()
            if refused is not None:
                self._core.fail_every(refused)
        merged = {**args, **kwargs} if args else kwargs
        state, frames = self._core.request(service, command, merged, timeout, progress)
        self._send(frames, state)
        return state

    def notify(self, service: str, command: str, args: dict[str, Any]) -> bool:
        """Send a request whose answer nobody waits for (it is dropped on arrival); never blocks.
        False: not sent (no connection to the broker now, or the client is closed)."""
        if self._closed:
            return False
        frames = self._core.notice(service, command, args, NOTIFY_TTL_S)
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def _send(self, frames: list[Any], state: CallState | None = None) -> None:
        try:
            _send_frames(self._sock, frames, _NOBLOCK, len(frames) == 1)
            if state is not None:
                state.sent = True
            return
        except zmq.Again:
            pass
        # Not connected (yet): wait for the connection until the call's deadline, watching
        # the handshake monitor: a refused handshake fails the call at once.
        deadline = (
            state.deadline if state is not None else time.monotonic() + self._core.default_timeout_s
        )
        monitor = self._monitor
        if monitor.refused() is not None:
            # libzmq never retries a refused handshake: try once more (the key may be known now).
            monitor.watch.reset()
            self._sock.disconnect(self.endpoint)
            self._sock.connect(self.endpoint)
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLOUT)
        poller.register(monitor.socket, zmq.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            ready = dict(poller.poll(math.ceil(remaining * 1000))) if remaining > 0 else {}
            refused = monitor.refused() if monitor.socket in ready else None
            if refused is not None:
                if state is not None:
                    self._core.fail(state, refused)
                raise refused
            if self._sock in ready:
                try:
                    self._sock.send_multipart(frames, zmq.NOBLOCK, copy=len(frames) == 1)
                    if state is not None:
                        state.sent = True
                    return
                except zmq.Again:
                    continue
            if remaining > 0 and ready:
                continue
            if state is not None:
                self._core.expire(state, self.endpoint, unsent=True)
                if state.error is not None:
                    raise state.error
            raise BrokerUnreachable(
                f"no connection to the broker at {self.endpoint}",
                details={"endpoint": self.endpoint},
            )

    def _pump_once(self, limit: float, state: CallState) -> None:
        """Wait for one message (until ``limit`` at most) and dispatch it to whichever call owns
        it; fail ``state`` if its own deadline has passed meanwhile."""
        remaining = limit - time.monotonic()
        ready = self._poller.poll(math.ceil(remaining * 1000)) if remaining > 0 else []
        if not ready:
            # Only the call's deadline ends it: a shorter limit (updates' timeout) does not.
            if time.monotonic() >= state.deadline:
                self._core.expire(state, self.endpoint)
            return
        if len(ready) > 1 or ready[0][0] is not self._sock:
            # A handshake ended: refused (a revoked key, when the broker dropped us) fails every
            # call in flight, since none of them can be answered on this connection any more.
            refused = self._monitor.refused()
            if refused is not None:
                self._core.fail_every(refused)
            if not any(sock is self._sock for sock, _ in ready):
                return
        sock = self._sock
        try:
            first, more = _recv_frame(sock, _NOBLOCK)  # the poll said a message waits
        except zmq.Again:  # a spurious wake-up: the caller polls again
            return
        self._core.dispatch([first, *_recv_rest(sock)] if more else [first])

    def _on_connection(self, up: bool) -> None:
        if up:
            self._core.reconnected(self.endpoint)
            return
        # Answers that arrived before the connection closed are still queued: apply them
        # first, so only the calls really left without an answer count as lost.
        while True:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._core.dispatch(frames)
        self._core.connection_lost()

    # --- introspection ----------------------------------------------------------------------

    def ping(self, timeout: float | None = None) -> dict[str, Any]:
        """Ask the broker for a pong; raises ``BrokerUnreachable`` if it does not answer."""
        result: dict[str, Any] = self.call(protocol.BROKER_SERVICE, "ping", timeout=timeout)
        return result

    def services(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Every service the broker has seen: name, kind, state (up/down), since, pid, host."""
        result: list[dict[str, Any]] = self.call(
            protocol.BROKER_SERVICE, "services", timeout=timeout
        )
        return result

    def describe(self, service: str, timeout: float | None = None) -> dict[str, Any]:
        """A service's commands with their arguments and docs, as it declared them."""
        result: dict[str, Any] = self.call(
            protocol.BROKER_SERVICE, "describe", service=service, timeout=timeout
        )
        return result

    def stats(self, timeout: float | None = None) -> dict[str, Any]:
        """The broker's routing counters and drops by reason."""
        result: dict[str, Any] = self.call(protocol.BROKER_SERVICE, "stats", timeout=timeout)
        return result

    # --- events -----------------------------------------------------------------------------

    def subscribe(
        self,
        *prefixes: str,
        timeout: float | None = None,
        repair: bool = False,
        repair_timeout: float = 2.0,
        max_queue: int | None = None,
    ) -> Subscription:
        """Subscribe to events whose topic starts with any of ``prefixes`` (all, if none).

        Iteration ends when no event arrives within ``timeout`` (None: never). With ``repair``,
        events missed in a gap are fetched from their publisher and delivered first (see
        ``Subscription``); the subscription then makes calls on this client. ``max_queue``: see
        ``queue_options``.
        """
        return Subscription(
            self,
            prefixes,
            timeout,
            repair=repair,
            repair_timeout=repair_timeout,
            max_queue=max_queue,
        )

    # --- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Fail calls still pending and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._core.fail_all(lambda s: Unavailable(f"{s.service}.{s.command}: client closed"))
        self._monitor.close()
        self._sock.close(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
