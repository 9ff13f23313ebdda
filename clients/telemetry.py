"""``spotflow_device``'s public surface over linebus: code written for Spotflow's device SDK reads the same.

::

    from clients.telemetry import Compression, DeviceClient, SpotflowError

    client = DeviceClient.start(device_id="line3-press", provisioning_token="", db="spotflow.db",
                                bus="tcp://127.0.0.1:7750", service="telemetry")
    sender = client.create_stream_sender(stream_group="line3", stream="temperatures",
                                         compression=Compression.FASTEST)
    sender.enqueue_message(b'{"t": 21.5}')          # returns once the actor's store committed it
    sender.enqueue_messages([b"...", b"..."])       # linebus: many readings, one round trip
    client.wait_enqueued_messages_sent()
    print(client.pending_messages_count, client.get_desired_properties().values)

**Where the device lives.** With the seed, ``DeviceClient.start`` opens the local database and
provisions the device. Over the bus, the telemetry actor owns both: its ``[actor.options]``
(``db``, ``provisioning_token``, ``device_id``, ``instance_url``) decide. ``start`` keeps the
seed's signature so seed code runs unchanged: ``device_id``, ``provisioning_token``, ``db`` and
``instance`` are accepted and not sent anywhere (a ``device_id`` that differs from the actor's
registered id is logged, as the seed allows an approver to override it). spotflow-device 2.x's
``allow_remote_access=False`` is accepted too; remote access itself is not offered over linebus,
so ``allow_remote_access=True`` raises ``SpotflowError``. The keyword-only
``bus`` (a ``bus.client.Client`` or the broker's command endpoint, default ``LINEBUS_ENDPOINT`` or
``tcp://127.0.0.1:7750``) and ``service`` (default ``"telemetry"``) name the actor.

Every method raises ``SpotflowError`` on failure, with ``code`` the linebus wire code
(``storage_error`` for a full store, ``deadline_exceeded``, ``unavailable``,
``invalid_arguments``, ``unknown_service`` ...); the bus error is its ``__cause__``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from bus.client import Call, Client
from bus.errors import BusError
from clients._session import BusSession, connect_bus, sibling_client

__all__ = [
    "Compression",
    "DesiredProperties",
    "DeviceClient",
    "ProvisioningOperation",
    "SpotflowError",
    "StreamSender",
    "commit_messages",
]

log = logging.getLogger("clients.telemetry")

DEFAULT_SERVICE = "telemetry"
#: Bus deadline of ``wait_enqueued_messages_sent`` and ``send_message`` when none is given: the
#: seed blocks until done; over the bus every request has a deadline, so make it long.
DEFAULT_WAIT_TIMEOUT_S = 24 * 3600.0


class SpotflowError(Exception):
    """Any method can raise it when it cannot continue (``spotflow_device.SpotflowError``).

    Attributes:
        code: The linebus error code (``storage_error``, ``deadline_exceeded``, ``unavailable``,
            ``invalid_arguments``, ``cancelled``, ``unknown_service`` ...).
        details: Every machine-readable detail the error carried (``reason``, ``argument``, ``pending``).
    """

    def __init__(
        self, message: str, code: str = "internal", *, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.details = dict(details or {})

    @classmethod
    def from_bus(cls, exc: BusError) -> SpotflowError:
        """Wrap a bus error, keeping its code and details."""
        return cls(exc.message, getattr(exc, "remote_code", None) or exc.code, details=exc.details)

    def __str__(self) -> str:
        return f"[{self.code}] {self.args[0]}"


class Compression(IntEnum):
    """How a stream's messages are compressed on the way upstream (values as in the seed)."""

    UNCOMPRESSED = 0
    FASTEST = 1
    SMALLEST_SIZE = 2


@dataclass(frozen=True)
class DesiredProperties:
    """A version of the Desired Properties: ``version`` and the ``values`` dict."""

    version: int
    values: dict[str, Any]

    @classmethod
    def _from(cls, data: Mapping[str, Any]) -> DesiredProperties:
        return cls(int(data["version"]), dict(data["values"]))


@dataclass(frozen=True)
class ProvisioningOperation:
    """The seed's Provisioning Operation summary. The linebus ingest protocol approves at once,
    so ``display_provisioning_operation_callback`` is never called; the type exists for imports."""

    id: str
    verification_code: str
    expiration_time: str


class DeviceClient(BusSession):
    """A device's session with the telemetry actor. Create it with ``DeviceClient.start``.

    The actor stores all outgoing messages in its local database and sends them from a
    background thread, so this works even when the plant network is not there. Thread-safety:
    one bus connection is not shared between threads; the client serialises its calls with a
    lock, so one ``DeviceClient`` may be used from several threads (as the seed allows).
    """

    def __init__(
        self, bus: Client, service: str, *, owned: bool, timeout: float, wait_timeout: float
    ) -> None:
        self._bus = bus
        self._owned = owned
        self.service = service
        self.timeout = timeout
        self.wait_timeout = wait_timeout
        self._lock = threading.RLock()
        self._closed = False
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()

    @staticmethod
    def start(
        device_id: str | None,
        provisioning_token: str,
        db: str,
        instance: str | None = None,
        display_provisioning_operation_callback: Callable[[ProvisioningOperation], None]
        | None = None,
        desired_properties_updated_callback: Callable[[DesiredProperties], None] | None = None,
        allow_remote_access: bool = False,
        *,
        bus: Client | str | None = None,
        service: str = DEFAULT_SERVICE,
        subscribe_endpoint: str | None = None,
        timeout: float = 30.0,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT_S,
    ) -> DeviceClient:
        """Connect to the telemetry actor ``service`` on the bus and check that it answers.

        Args:
            device_id, provisioning_token, db, instance: The seed's arguments; the actor's config
                owns the store and the registration, so these are not used (see the module doc).
            display_provisioning_operation_callback: Never called (approval is immediate).
            desired_properties_updated_callback: Called from a background thread right after
                start with the current Desired Properties, then with each newer version.
            allow_remote_access: spotflow-device 2.x's switch for the Platform's remote access
                (a terminal on the device through the cloud). linebus does not offer remote
                access: ``False`` (the default, as in 2.x) is accepted, ``True`` is refused.
            bus: A ``bus.client.Client`` or the broker's command endpoint (default
                ``LINEBUS_ENDPOINT`` or ``tcp://127.0.0.1:7750``).
            service: The telemetry actor's service name.
            subscribe_endpoint: With an endpoint string, where events are read (default: port + 2).
            timeout: Bus deadline, in seconds, of every call except the waiting ones.
            wait_timeout: Bus deadline of ``send_message`` and ``wait_enqueued_messages_sent``.

        Raises:
            SpotflowError: The service is unknown or down (``unknown_service``, ``unavailable``);
                ``invalid_arguments`` for ``allow_remote_access=True``.
        """
        if allow_remote_access:
            raise SpotflowError(
                "allow_remote_access=True: linebus does not offer the Platform's remote access"
                " (no terminal or tunnel to the device goes through the telemetry actor)",
                "invalid_arguments",
                details={"argument": "allow_remote_access"},
            )
        del (
            provisioning_token,
            db,
            instance,
            display_provisioning_operation_callback,
        )  # owned by the actor
        client, owned = connect_bus(bus, subscribe_endpoint, timeout)
        device = DeviceClient(
            client, service, owned=owned, timeout=timeout, wait_timeout=wait_timeout
        )
        try:
            registered = device._call("device_id")
            if device_id is not None and registered and registered != device_id:
                log.info(
                    "the telemetry actor %s is registered as %r, not %r",
                    service,
                    registered,
                    device_id,
                )
            if desired_properties_updated_callback is not None:
                device._watch_desired(desired_properties_updated_callback)
        except BaseException:
            device.close()
            raise
        return device

    # ------------------------------------------------------------ session

    def _release(self) -> None:
        """Stop the desired-properties thread (``close`` then closes an owned connection)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)

    def _call(
        self, command: str, args: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        if self._closed:
            raise SpotflowError("the DeviceClient is closed", "closed")
        try:
            with self._lock:
                return self._bus.call(
                    self.service, command, args or {}, timeout=timeout or self.timeout
                )
        except BusError as exc:
            raise SpotflowError.from_bus(exc) from exc

    def _pipeline(
        self,
        command: str,
        arg_list: Sequence[dict[str, Any]],
        in_flight: int,
        convert: Callable[[Any], Any] = lambda result: result,
    ) -> list[Any]:
        """Run ``command`` once per ``arg_list`` entry with up to ``in_flight`` calls outstanding.

        Results come back in order, each passed through ``convert`` as it arrives (while later
        calls are under way). On the first failure no further call is started; the calls
        already under way are waited for, then ``SpotflowError`` is raised with ``details``
        ``failed_call`` (its index) and ``results`` (every result, None where a call failed or
        was never made), so the caller knows exactly what was done.
        """
        if self._closed:
            raise SpotflowError("the DeviceClient is closed", "closed")
        results: list[Any] = [None] * len(arg_list)
        failures: dict[int, SpotflowError] = {}
        window: collections.deque[tuple[int, Call]] = collections.deque()
        with self._lock:
            started = 0
            while window or (not failures and started < len(arg_list)):
                while not failures and started < len(arg_list) and len(window) < in_flight:
                    try:
                        window.append(
                            (
                                started,
                                self._bus.start(
                                    self.service, command, arg_list[started], timeout=self.timeout
                                ),
                            )
                        )
                    except BusError as exc:
                        failures[started] = SpotflowError.from_bus(exc)
                    except TypeError as exc:  # an argument msgpack cannot carry: never sent
                        failures[started] = SpotflowError(str(exc), "invalid_arguments")
                    started += 1
                if not window:
                    break
                index, call = window.popleft()
                try:
                    results[index] = convert(call.result())
                except BusError as exc:
                    failures[index] = SpotflowError.from_bus(exc)
        if failures:
            index = min(failures)  # the first call that failed, whichever failed first in time
            error = failures[index]
            error.details.update(failed_call=index, results=results)
            raise error
        return results

    def _wait(
        self,
        command: str,
        args: dict[str, Any],
        timeout: float | None,
        progress: Callable[[Any], Any] | None,
    ) -> Any:
        """Run a waiting command on its own bus connection (other threads keep using this one);
        Ctrl-C (or any exception in ``progress``) cancels it on the actor."""
        if self._closed:
            raise SpotflowError("the DeviceClient is closed", "closed")
        try:
            with sibling_client(self._bus, self.timeout) as own:
                call: Call = own.start(
                    self.service, command, args, timeout=timeout or self.wait_timeout
                )
                try:
                    for update in call.updates():
                        if progress is not None:
                            progress(update)
                    return call.result()
                except BusError:
                    raise
                except BaseException:
                    call.cancel()
                    with contextlib.suppress(BusError):
                        call.result()
                    raise
        except BusError as exc:
            raise SpotflowError.from_bus(exc) from exc

    def _watch_desired(self, callback: Callable[[DesiredProperties], None]) -> None:
        """Subscribe to ``<service>.desired`` on an own connection, then call back in a thread."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                own = sibling_client(self._bus, self.timeout)
                with own, own.subscribe(f"{self.service}.desired") as sub:
                    sub.wait_ready()
                    current = DesiredProperties._from(
                        own.call(self.service, "get_desired_properties")
                    )
                    ready.set()
                    callback(current)
                    version = current.version
                    while not self._stop.is_set():
                        event = sub.next(0.2)
                        if event is None or event.topic != f"{self.service}.desired":
                            continue
                        data = event.data
                        if event.missed:  # updates were lost: ask for the latest instead
                            data = own.call(
                                self.service, "get_desired_properties_if_newer", version=version
                            )
                        if isinstance(data, dict) and int(data["version"]) > version:
                            desired = DesiredProperties._from(data)
                            version = desired.version
                            callback(desired)
            except BaseException as exc:  # reported to start(), or logged
                if not ready.is_set():
                    errors.append(exc)
                    ready.set()
                else:
                    log.exception("desired-properties watcher of %s ended", self.service)

        self._watcher = threading.Thread(
            target=run, name=f"spotflow desired {self.service}", daemon=True
        )
        self._watcher.start()
        ready.wait(self.timeout + 5)
        if errors:
            exc = errors[0]
            if isinstance(exc, BusError):
                raise SpotflowError.from_bus(exc) from exc
            raise exc

    # ------------------------------------------------------------ the seed's DeviceClient

    @property
    def device_id(self) -> str:
        """(Read-only) The Device ID the upstream registered ("" before the first provisioning)."""
        return str(self._call("device_id"))

    @property
    def workspace_id(self) -> str:
        """(Read-only) The ID of the Workspace the Device belongs to."""
        return str(self._call("workspace_id"))

    def create_stream_sender(
        self,
        stream_group: str | None = None,
        stream: str | None = None,
        compression: Compression | None = Compression.UNCOMPRESSED,
    ) -> StreamSender:
        """Create a ``StreamSender`` for a Stream of a Stream Group (defaults: ``default``/``default``)."""
        names = self._call(
            "create_stream_sender",
            {
                "stream_group": stream_group,
                "stream": stream,
                "compression": int(compression or Compression.UNCOMPRESSED),
            },
        )
        return StreamSender(
            self, names["stream_group"], names["stream"], Compression(names["compression"])
        )

    @property
    def pending_messages_count(self) -> int:
        """The number of Messages persisted in the local database but not yet sent to the Platform."""
        return int(self._call("pending_messages_count"))

    def wait_enqueued_messages_sent(
        self, timeout: float | None = None, progress: Callable[[dict[str, Any]], Any] | None = None
    ) -> None:
        """Block until all the Messages enqueued before are sent (linebus: at most ``timeout`` s, then
        ``SpotflowError`` ``deadline_exceeded``; ``progress`` gets ``{"pending", "up_to_seq", "online"}``)."""
        self._wait("wait_enqueued_messages_sent", {}, timeout, progress)

    def get_desired_properties(self) -> DesiredProperties:
        """Get the current Desired Properties (only the latest version)."""
        return DesiredProperties._from(self._call("get_desired_properties"))

    def get_desired_properties_if_newer(
        self, version: int | None = None
    ) -> DesiredProperties | None:
        """Get the current Desired Properties if their version is higher than ``version``, else None.

        With ``version`` None, the current ones in any case (version 0 and no values before the
        Platform sent any)."""
        data = self._call("get_desired_properties_if_newer", {"version": version})
        return None if data is None else DesiredProperties._from(data)

    def update_reported_properties(self, properties: dict[str, Any]) -> None:
        """Enqueue an update of the Reported Properties (persisted, sent asynchronously)."""
        self._call("update_reported_properties", {"properties": dict(properties)})

    @property
    def any_pending_reported_properties_updates(self) -> bool:
        """(Read-only) Whether any update to Reported Properties is yet to be sent to the Platform."""
        return bool(self._call("any_pending_reported_properties_updates"))

    # ------------------------------------------------------------ linebus extensions

    def history(
        self,
        stream_group: str | None = None,
        stream: str | None = None,
        *,
        from_seq: int | None = None,
        to_seq: int | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Stored messages of one stream by ``stream_seq`` or time range (inclusive), for backfill."""
        args = {
            "stream_group": stream_group,
            "stream": stream,
            "from_seq": from_seq,
            "to_seq": to_seq,
            "since": since,
            "until": until,
            "limit": limit,
        }
        return list(self._call("history", args))

    def stats(self) -> dict[str, Any]:
        """The actor's store and forwarder counters (pending, forwarded, drops by reason, online ...)."""
        return dict(self._call("stats"))


def commit_messages(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The messages of a ``<service>.commit.<group>.<stream>`` event, one map each.

    A commit event holds the messages one write stored on one stream as columns (one event per
    transaction instead of one per message, for subscribers that want every reading); each map
    returned is what that message's ``<service>.stream.<group>.<stream>`` event carries.
    """
    names = {"stream_group": data["stream_group"], "stream": data["stream"]}
    columns = {key: value for key, value in data.items() if key not in names}
    keys = list(columns)
    return [
        {**names, **dict(zip(keys, row, strict=True))}
        for row in zip(*columns.values(), strict=True)
    ]


def _acks(columns: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """The actor's column-wise acks as one ``{"seq", "stream_seq", "duplicate"}`` per message."""
    return [
        {"seq": seq, "stream_seq": stream_seq, "duplicate": duplicate}
        for seq, stream_seq, duplicate in zip(
            columns["seq"], columns["stream_seq"], columns["duplicate"], strict=True
        )
    ]


def _payload(payload: object, what: str = "payload") -> bytes:
    """A payload as the actor stores it: bytes (str as UTF-8, which also takes the actor's fast path)."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    raise SpotflowError(
        f"{what} must be str or bytes, not {type(payload).__name__}",
        "invalid_arguments",
        details={"argument": "payload"},
    )


def _wire_items(
    messages: Iterable[str | bytes | bytearray | memoryview | Mapping[str, Any]],
) -> list[Any]:
    """``enqueue_messages``' items as the actor takes them (``_wire_item`` each).

    A list of bytes, the bulk case, passes as it is: no call per item.
    """
    items = list(messages)
    if set(map(type, items)) <= {bytes}:
        return items
    return [_wire_item(m) for m in items]


def _wire_item(
    message: str | bytes | bytearray | memoryview | Mapping[str, Any],
) -> bytes | dict[str, Any]:
    """One ``enqueue_messages`` item as the actor takes it: a payload, or a map with ``payload``."""
    if isinstance(message, Mapping):
        return dict(message)
    return _payload(message, "a message (or a map with 'payload')")


class StreamSender:
    """A sender of Messages to one Stream; create it with ``DeviceClient.create_stream_sender``."""

    def __init__(
        self, client: DeviceClient, stream_group: str, stream: str, compression: Compression
    ) -> None:
        self._client = client
        self.stream_group = stream_group
        self.stream = stream
        self.compression = compression

    def _stream(self) -> dict[str, Any]:
        return {"stream_group": self.stream_group, "stream": self.stream}

    def _message(self, payload: str | bytes, ids: dict[str, str | None]) -> dict[str, Any]:
        args = {
            "payload": _payload(payload),
            **self._stream(),
            "compression": int(self.compression),
        }
        args.update({k: v for k, v in ids.items() if v is not None})
        return args

    def send_message(
        self,
        payload: str | bytes,
        batch_id: str | None = None,
        message_id: str | None = None,
        batch_slice_id: str | None = None,
        chunk_id: str | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        """Send a Message and block until it (and all Messages enqueued before it) is sent.

        linebus: at most ``timeout`` seconds (default: the client's ``wait_timeout``), then
        ``SpotflowError`` ``deadline_exceeded``; the message stays stored and is sent later.
        """
        ids = {
            "batch_id": batch_id,
            "message_id": message_id,
            "batch_slice_id": batch_slice_id,
            "chunk_id": chunk_id,
        }
        self._client._wait("send_message", self._message(payload, ids), timeout, None)

    def enqueue_message(
        self,
        payload: str | bytes,
        batch_id: str | None = None,
        message_id: str | None = None,
        batch_slice_id: str | None = None,
        chunk_id: str | None = None,
    ) -> None:
        """Enqueue a Message; returns right after the actor saved it in its local database."""
        ids = {
            "batch_id": batch_id,
            "message_id": message_id,
            "batch_slice_id": batch_slice_id,
            "chunk_id": chunk_id,
        }
        self._client._call("enqueue_message", self._message(payload, ids))

    def enqueue_messages(
        self,
        messages: Iterable[str | bytes | Mapping[str, Any]],
        *,
        batch_size: int = 1000,
        in_flight: int = 4,
    ) -> list[dict[str, Any]]:
        """linebus: enqueue many Messages, ``batch_size`` per transaction, pipelined.

        Each item is a payload or a map with ``payload`` and any of ``batch_id``, ``message_id``,
        ``batch_slice_id``, ``chunk_id``. The messages go in calls of ``batch_size``, each one
        transaction (all or nothing) on the actor, with up to ``in_flight`` calls outstanding
        (no round trip is waited for per batch); the actor stores them in order. Returns one
        ``{"seq", "stream_seq", "duplicate"}`` per message, in order, once every one is committed.

        Raises:
            SpotflowError: A batch was refused (``storage_error`` for a full store, ...). No later
                batch was sent; batches already under way finished. ``details["failed_call"]`` is
                the refused batch's index and ``details["results"]`` each batch's acks (None if
                not stored), so exactly the stored messages are known.
        """
        if batch_size < 1 or in_flight < 1:
            raise SpotflowError("batch_size and in_flight must be at least 1", "invalid_arguments")
        items = _wire_items(messages)
        common = {**self._stream(), "compression": int(self.compression)}
        calls = [
            {"messages": items[i : i + batch_size], **common}
            for i in range(0, len(items), batch_size)
        ]
        replies = self._client._pipeline("enqueue_messages", calls, in_flight, _acks)
        return [ack for reply in replies for ack in reply]

    def enqueue_batch_completion(self, batch_id: str) -> None:
        """Enqueue the manual completion of the current Batch."""
        self._client._call("enqueue_batch_completion", {"batch_id": batch_id, **self._stream()})

    def enqueue_message_completion(self, batch_id: str, message_id: str) -> None:
        """Enqueue the manual completion of the current (chunked) Message."""
        self._client._call(
            "enqueue_message_completion",
            {"batch_id": batch_id, "message_id": message_id, **self._stream()},
        )
