"""The broker's ZAP handler: CURVE peers are let in by public key and named by their identity.

libzmq asks a ZAP handler (RFC 27, a REP socket bound at ``inproc://zeromq.zap.01`` in the
same context) about every CURVE handshake on a socket that has a ZAP domain. This handler looks
the client's public key up in the ``Keyring`` and answers:

- known key: ``200``, with the identity name as User-Id. Every message that connection delivers
  then carries it: ``frame.get("User-Id")`` on a frame received with ``copy=False``, on the
  ROUTER, on the XSUB (publishers) and on XPUB subscription messages.
- unknown key, another mechanism than CURVE, a domain not served: ``400``. The peer sees
  ``EVENT_HANDSHAKE_FAILED_AUTH`` on its monitor and is not retried by libzmq.

Where it runs: nowhere of its own. The broker serves its command socket from a synchronous
``zmq.Poller`` loop in one thread; the handler's ``socket`` is one more entry in that poller and
``handle_pending()`` answers what is queued. Handshakes are then answered within one turn of the
broker loop (one lookup each, microseconds), with no thread to start, stop or lock against, and a
reload (SIGHUP flag or the ``reload`` command, both seen by that loop) swaps the keyring between
two handshakes. The methods are nonetheless safe to call from another thread (one lock, held for a
dict lookup), so the handler can also be pumped by a thread of its own.

Order matters (reference/zmq-security.md §6): ``start()`` the handler before binding the secured
sockets, and set their ZAP domain with ``ZAP_ENFORCE_DOMAIN`` (``curve.secure_server`` does), so
that no handshake is ever let in unauthenticated.

Revocation: a new keyring applies to the next handshake only; libzmq 4.3.5 cannot close one peer
of a bound ROUTER, XSUB or XPUB. ``reload`` therefore returns a ``Revocation``: per domain, the
identities whose accepted keys are no longer granted, and which of them were only given a new
key. Where the broker checks every message's User-Id against the identities it now knows, a
removed identity is refused at once with no further step; everywhere else, and for rotated keys,
the broker calls ``drop_connections`` on the domains of ``domains_to_drop(checked)`` (unbind and
bind again: every peer reconnects and handshakes afresh, the revoked are refused), then
``forget(domain)``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import zmq

from bus.security.curve import DOMAINS
from bus.security.keyring import Keyring

__all__ = [
    "ZAP_ENDPOINT",
    "RefusalHook",
    "Revocation",
    "ZapHandler",
    "drop_connections",
]

#: Where libzmq looks for the ZAP handler of a context (fixed by RFC 27).
ZAP_ENDPOINT: Final = "inproc://zeromq.zap.01"
_VERSION: Final = b"1.0"
_CURVE: Final = b"CURVE"
_OK: Final = b"200"
_REFUSED: Final = b"400"
_ERROR: Final = b"500"

#: Called on each refused handshake with (domain, peer address, reason): the broker logs it
#: through a rate limiter, since anyone who can reach the port can cause refusals.
RefusalHook = Callable[[str, str, str], None]


@dataclass(frozen=True, slots=True)
class Revocation:
    """What a reload took away from peers that may still be connected.

    Attributes:
        by_domain: Domain -> the revoked identities it let in since ``forget(domain)``. An
            identity is revoked when a key of it was let in and the new keyring no longer grants
            that key to that name.
        rotated: The revoked identities that the new keyring still knows, under another key. A
            check of User-Id per message cannot tell their old connections from new ones.
    """

    by_domain: Mapping[str, frozenset[str]] = field(default_factory=dict)
    rotated: frozenset[str] = frozenset()

    @property
    def identities(self) -> frozenset[str]:
        """Every revoked identity: refuse their messages from now on (unless ``rotated``)."""
        return frozenset().union(*self.by_domain.values())

    @property
    def domains(self) -> frozenset[str]:
        """Every domain that let a revoked key in."""
        return frozenset(self.by_domain)

    def domains_to_drop(self, checked: Iterable[str] = ()) -> frozenset[str]:
        """The domains whose connections must be dropped (``drop_connections``).

        Args:
            checked: Domains on which the broker checks every message's User-Id against the
                identities it knows now (the ROUTER; the XSUB under a Python forwarding loop).
                There, an identity gone from the keyring is refused at once without a drop; only
                a rotated key needs one. Elsewhere (the XPUB, the XSUB under the C proxy) any
                revocation needs a drop.
        """
        per_message = frozenset(checked)
        return frozenset(
            domain
            for domain, identities in self.by_domain.items()
            if domain not in per_message or identities & self.rotated
        )

    def __bool__(self) -> bool:
        return bool(self.by_domain)


class ZapHandler:
    """Answers ZAP requests for CURVE from a keyring; the owner polls ``socket``.

    Args:
        ctx: The context of the broker's sockets (libzmq finds the handler through inproc, so a
            handler on another context is never asked).
        keyring: The keys let in, and their identity names.
        domains: The ZAP domains served; a handshake for another domain is refused.
        on_refused: Called for each refusal with (domain, address, reason).
    """

    def __init__(
        self,
        ctx: zmq.Context[Any],
        keyring: Keyring,
        *,
        domains: Iterable[str] = DOMAINS,
        on_refused: RefusalHook | None = None,
    ) -> None:
        self._ctx = ctx
        self._keyring = keyring
        self._domains = frozenset(domains)
        self._on_refused = on_refused
        self._lock = threading.Lock()
        # domain -> binary key -> identity, for every key let in since forget(domain).
        self._accepted: dict[str, dict[bytes, str]] = {d: {} for d in self._domains}
        self._socket: zmq.Socket[Any] | None = None
        #: Handshakes answered, by outcome: ``accepted`` or the reason of the refusal.
        self.counts: Counter[str] = Counter()

    @property
    def keyring(self) -> Keyring:
        """The keyring in force."""
        return self._keyring

    @property
    def socket(self) -> zmq.Socket[Any]:
        """The ZAP socket to poll for ``POLLIN``; ``start()`` first."""
        if self._socket is None:
            raise RuntimeError("ZapHandler.start() was not called")
        return self._socket

    def start(self) -> None:
        """Bind the ZAP endpoint of the context. Call before binding any secured socket.

        Raises:
            RuntimeError: another ZAP handler (pyzmq's authenticators included) is bound in this
                context.
        """
        if self._socket is not None:
            return
        sock = self._ctx.socket(zmq.REP)
        sock.linger = 0
        try:
            sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            if exc.errno == zmq.EADDRINUSE:
                raise RuntimeError("another ZAP handler is already bound in this context") from None
            raise
        self._socket = sock

    def close(self) -> None:
        """Unbind and close the ZAP socket. Secured sockets then refuse every new handshake."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def handle_pending(self, limit: int = 256) -> int:
        """Answer up to ``limit`` queued ZAP requests without blocking; return how many."""
        sock = self.socket
        answered = 0
        while answered < limit:
            try:
                request = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            sock.send_multipart(self.answer(request))
            answered += 1
        return answered

    def answer(self, request: list[bytes]) -> list[bytes]:
        """The ZAP reply to one request (RFC 27 frames); the decision without the socket."""
        if len(request) < 6:
            request_id = request[1] if len(request) > 1 else b""
            return self._refuse(request_id, "", "", _ERROR, "malformed ZAP request")
        version, request_id, domain_b, address_b, _routing_id, mechanism = request[:6]
        domain = domain_b.decode("utf-8", "replace")
        address = address_b.decode("utf-8", "replace")
        if version != _VERSION:
            return self._refuse(request_id, domain, address, _ERROR, "unsupported ZAP version")
        if domain not in self._domains:
            return self._refuse(request_id, domain, address, _REFUSED, "unknown domain")
        if mechanism != _CURVE or len(request) != 7:
            return self._refuse(request_id, domain, address, _REFUSED, "not CURVE")
        key = request[6]
        with self._lock:
            identity = self._keyring.identity_of(key)
            if identity is not None:
                self._accepted[domain][key] = identity
        if identity is None:
            return self._refuse(request_id, domain, address, _REFUSED, "unknown key")
        self.counts["accepted"] += 1
        return [_VERSION, request_id, _OK, b"OK", identity.encode(), b""]

    def _refuse(
        self, request_id: bytes, domain: str, address: str, status: bytes, reason: str
    ) -> list[bytes]:
        self.counts[reason] += 1
        if self._on_refused is not None:
            self._on_refused(domain, address, reason)
        return [_VERSION, request_id, status, reason.encode(), b"", b""]

    def reload(self, keyring: Keyring) -> Revocation:
        """Put ``keyring`` in force for the next handshakes; say what it revokes (see module doc)."""
        by_domain: dict[str, frozenset[str]] = {}
        with self._lock:
            self._keyring = keyring
            for domain, accepted in self._accepted.items():
                revoked = frozenset(
                    identity
                    for key, identity in accepted.items()
                    if keyring.identity_of(key) != identity
                )
                if revoked:
                    by_domain[domain] = revoked
        rotated = frozenset().union(*by_domain.values()) & keyring.names
        return Revocation(by_domain, rotated)

    def forget(self, domain: str) -> None:
        """Clear what ``domain`` let in: its connections were dropped and will handshake again."""
        with self._lock:
            self._accepted[domain] = {}

    def accepted(self, domain: str) -> dict[str, int]:
        """Identity -> number of its keys let in on ``domain`` since ``forget(domain)``.

        ZAP does not see disconnections, so this is an upper bound of who may be connected.
        """
        with self._lock:
            return dict(Counter(self._accepted[domain].values()))


def drop_connections(
    sock: zmq.Socket[Any], endpoint: str, *, attempts: int = 50, retry_s: float = 0.005
) -> None:
    """Close every connection accepted on ``endpoint`` by unbinding and binding it again.

    Peers reconnect by themselves (``reconnect_ivl``) and handshake again; messages queued on the
    dropped connections are lost, and so is, on each peer, the first message sent after the drop
    (reference/zmq-security.md §4), so clients need request timeouts and retries. The new bind
    can fail for a few milliseconds while the old listener closes: it is retried.

    Args:
        sock: The bound socket.
        endpoint: The endpoint as bound, resolved (``sock.last_endpoint`` for a ``tcp://*:*``
            wildcard); the same address and port are bound again.

    Raises:
        zmq.ZMQError: the endpoint could not be bound again within the attempts.
    """
    sock.unbind(endpoint)
    for attempt in range(attempts):
        try:
            sock.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or attempt == attempts - 1:
                raise
            time.sleep(retry_s)
