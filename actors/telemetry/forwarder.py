"""``Forwarder``: the background thread that drains the store to the upstream: the ingest service
over HTTP (``upstream.UpstreamClient``) or the plant's MQTT broker (``mqtt_upstream.MqttUpstream``),
as ``ForwarderConfig.upstream`` says. Both answer the same ``upstream.Upstream`` calls.

Each round of its loop:

1. makes sure it holds a registration (stored one; refreshed near expiry; provisioned again
   with the stored provisioning token when the server refuses it);
2. after every (re)connect, then every ``desired_poll_s`` (and at once when the upstream pushed
   newer ones: MQTT), reads the desired properties (latest version wins, a change calls
   ``on_desired``);
3. sends pending reported-properties patches, oldest first, and clears only the acked ones;
4. claims one upload from the store (resending an unfinished one under its old id first),
   sends it (HTTP: one compressed ``PUT``; MQTT: one QoS 1 PUBLISH per message), and marks only
   the seqs the upstream acked.

Any failure pauses the loop with capped exponential back-off and jitter; a ``Retry-After`` is
honoured as a floor. Nothing is dropped on failure: unacked messages stay pending. The thread
is a daemon only as a last resort; ``stop()`` ends it in order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from actors.telemetry.config import ForwarderConfig
from actors.telemetry.model import DesiredProperties, Registration
from actors.telemetry.store import TelemetryStore
from actors.telemetry.upstream import Throttled, Upstream, UpstreamClient
from bus.backoff import EQUAL_JITTER, Backoff
from bus.errors import BadRequest, BusError, PermissionDenied, Unavailable

__all__ = ["Forwarder"]

log = structlog.get_logger()

_WAIT_POLL_S = 0.5  # waiters re-check the store this often even without a notification


class Forwarder:
    """Forward the store's pending messages and twin updates to one upstream, in a thread.

    Args:
        store: The store to drain; shared with the writers (it is thread-safe).
        config: Upstream address, credentials and pacing.
        on_desired: Called from the forwarder thread with each newer desired-properties version;
            keep it short, the forwarder waits for it.
        upstream: The upstream client; by default the one ``config.upstream`` names.
    """

    def __init__(
        self,
        store: TelemetryStore,
        config: ForwarderConfig,
        *,
        on_desired: Callable[[DesiredProperties], None] | None = None,
        upstream: Upstream | None = None,
    ) -> None:
        self._store = store
        self._config = config
        self._on_desired = on_desired
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._upstream = upstream or self._default_upstream(config)
        self._backoff = Backoff(
            config.backoff_initial_s,
            config.backoff_max_s,
            jitter=EQUAL_JITTER,
            retry_after_max_s=config.retry_after_max_s,
        )
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self._registration = store.registration()
        self._online = False
        self._next_desired_poll = 0.0
        self._stats: dict[str, Any] = {
            "uploads": 0,
            "messages": 0,
            "duplicate_uploads": 0,
            "failures": 0,
            "throttled": 0,
            "last_error": None,
        }

    def _default_upstream(self, config: ForwarderConfig) -> Upstream:
        if config.mqtt is not None:
            # Imported here: paho-mqtt is needed only by an MQTT upstream (the `mqtt` extra).
            from actors.telemetry.mqtt_upstream import MqttUpstream

            return MqttUpstream(config, self._store, stop=self._stop, on_change=self.notify)
        return UpstreamClient(config.upstream_url, timeout_s=config.request_timeout_s)

    # -- lifecycle ----------------------------------------------------------------------------

    def ensure_registered(self) -> Registration:
        """Return a usable stored registration, or provision now (blocking, needs the network).

        Raises:
            PermissionDenied: The upstream refused the provisioning token.
            Unavailable: No registration is stored and the upstream cannot be reached.
        """
        registration = self._usable(self._registration)
        if registration is None:
            registration = self._provision()
        return registration

    def start(self) -> None:
        """Start the forwarding thread (idempotent)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="telemetry-forwarder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the thread after its current request; returns False if it did not end in time."""
        self._stop.set()
        self._wake.set()
        stopped = True
        if self._thread is not None:
            self._thread.join(timeout)
            stopped = not self._thread.is_alive()
        if stopped:
            self._upstream.close()
        else:
            log.warning("telemetry_forwarder_stop_timeout", timeout_s=timeout)
        with self._progress:
            self._progress.notify_all()
        return stopped

    def notify(self) -> None:
        """Tell the forwarder that new messages or reported updates were stored."""
        self._wake.set()

    @property
    def online(self) -> bool:
        """Whether the last exchange with the upstream succeeded."""
        return self._online

    @property
    def registration(self) -> Registration | None:
        """The registration in use (None before provisioning)."""
        return self._registration

    def stats(self) -> dict[str, Any]:
        """Counters of the forwarder: uploads, messages, duplicates, failures, the last error."""
        return {**self._stats, "online": self._online, "backoff_failures": self._backoff.failures}

    # -- waiting ------------------------------------------------------------------------------

    def wait_sent(self, up_to_seq: int | None = None, timeout: float | None = None) -> bool:
        """Wait until every message up to ``up_to_seq`` (default: all stored now) is forwarded.

        Returns:
            True when they are, False when ``timeout`` passed (or the forwarder stopped) first.
        """
        target = self._store.last_seq() if up_to_seq is None else up_to_seq

        def sent() -> bool:  # checked after every upload: one index lookup, not a count
            oldest = self._store.oldest_pending_seq()
            return oldest is None or oldest > target

        return self._wait(sent, timeout)

    def wait_reported_sent(self, timeout: float | None = None) -> bool:
        """Wait until no reported-properties patch is pending; False on timeout."""
        return self._wait(lambda: not self._store.any_pending_reported_updates(), timeout)

    def _wait(self, done: Callable[[], bool], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._progress:
            while not done():
                remaining = _WAIT_POLL_S if deadline is None else deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return False
                self._progress.wait(min(remaining, _WAIT_POLL_S))
        return True

    def _notify_progress(self) -> None:
        with self._progress:
            self._progress.notify_all()

    # -- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        log.info("telemetry_forwarder_started", upstream=self._config.upstream_url)
        while not self._stop.is_set():
            try:
                worked = self._step()
            except Throttled as exc:
                self._stats["throttled"] += 1
                self._pause(exc, exc.retry_after_s)
            except PermissionDenied as exc:
                self._registration = None  # provision again with the stored provisioning token
                self._pause(exc)
            except Unavailable as exc:
                self._online = False  # desired properties are re-read after the reconnect
                self._pause(exc)
            except BusError as exc:
                self._pause(exc)
            except Exception as exc:
                log.exception("telemetry_forwarder_bug")
                self._pause(exc)
            else:
                self._backoff.reset()
                if not worked:
                    self._idle()
        log.info("telemetry_forwarder_stopped")

    def _step(self) -> bool:
        registration = self._current_registration()
        if (
            not self._online
            or time.monotonic() >= self._next_desired_poll
            or self._upstream.desired_changed()
        ):
            self._poll_desired(registration)
            if not self._online:
                log.info(
                    "telemetry_upstream_connected",
                    upstream=self._config.upstream_url,
                    device_id=registration.device_id,
                )
                self._online = True
        worked = self._send_reported(registration)
        return self._send_upload(registration) or worked

    def _pause(self, exc: BaseException, retry_after_s: float | None = None) -> None:
        delay = self._backoff.next_delay(retry_after_s)
        self._stats["failures"] += 1
        self._stats["last_error"] = str(exc)
        log.warning(
            "telemetry_upstream_retry",
            error=str(exc),
            delay_s=round(delay, 3),
            failures=self._backoff.failures,
        )
        self._stop.wait(delay)

    def _idle(self) -> None:
        if self._wake.wait(max(0.0, self._next_desired_poll - time.monotonic())):
            self._wake.clear()
            self._linger()

    def _linger(self) -> None:
        """Batch by time: give writers ``linger_s`` to add more before sending a small upload."""
        deadline = time.monotonic() + self._config.linger_s
        while (
            not self._stop.is_set()
            and self._store.pending_count() < self._config.max_batch_messages
        ):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._wake.wait(remaining):  # each append notifies: re-count
                self._wake.clear()

    # -- registration -------------------------------------------------------------------------

    def _usable(self, registration: Registration | None) -> Registration | None:
        config = self._config
        if registration is None or registration.instance_url != config.upstream_url:
            return None
        if config.device_id is not None and registration.device_id != config.device_id:
            return None
        return registration if registration.valid_at(time.time()) else None

    def _current_registration(self) -> Registration:
        registration = self._usable(self._registration)
        if registration is None:
            return self._provision()
        if registration.expires_at - time.time() < self._config.token_refresh_margin_s:
            try:
                registration = self._upstream.refresh(registration)
            except PermissionDenied:
                return self._provision()
            self._store.save_registration(registration)
            self._registration = registration
            log.info(
                "telemetry_token_refreshed",
                device_id=registration.device_id,
                expires_at=registration.expires_at,
            )
        return registration

    def _provision(self) -> Registration:
        registration = self._upstream.provision(
            self._config.provisioning_token or "", self._config.device_id
        )
        self._store.save_registration(registration)
        self._registration = registration
        log.info(
            "telemetry_provisioned",
            device_id=registration.device_id,
            workspace_id=registration.workspace_id,
        )
        return registration

    # -- twin and messages --------------------------------------------------------------------

    def _poll_desired(self, registration: Registration) -> None:
        desired = self._upstream.desired_properties(registration)
        self._next_desired_poll = time.monotonic() + self._config.desired_poll_s
        # Version 0 is "nothing set yet" upstream: no callback for it.
        if desired.version > 0 and self._store.save_desired_properties(desired):
            log.info("telemetry_desired_updated", version=desired.version)
            if self._on_desired is not None:
                try:
                    self._on_desired(desired)
                except Exception:
                    log.exception("telemetry_desired_callback_failed", version=desired.version)

    def _send_reported(self, registration: Registration) -> bool:
        updates = self._store.pending_reported_updates()
        if not updates:
            return False
        acked = self._upstream.report(registration, updates)
        self._store.mark_reported_sent(acked)
        self._notify_progress()
        if not acked:
            raise BadRequest("upstream acknowledged none of the reported-properties updates")
        return True

    def _send_upload(self, registration: Registration) -> bool:
        upload = self._store.claim_upload(
            max_messages=self._config.max_batch_messages, max_bytes=self._config.max_batch_bytes
        )
        if upload is None:
            return False
        result = self._upstream.send(registration, upload)
        settled = self._store.complete_upload(upload.upload_id, result.acked, result.rejected)
        self._stats["uploads"] += 1
        self._stats["messages"] += settled
        self._stats["duplicate_uploads"] += int(result.duplicate)
        self._notify_progress()
        log.debug(
            "telemetry_upload_done",
            upload_id=upload.upload_id,
            messages=len(upload.messages),
            settled=settled,
            duplicate=result.duplicate,
        )
        if not settled:
            raise BadRequest(f"upstream acknowledged none of upload {upload.upload_id}")
        return True
