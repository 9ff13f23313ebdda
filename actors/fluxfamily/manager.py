"""``FluxManager``: authorise with and manage a FLUX device over TLS on TCP 1901 (flux.md §3.2).

| UpnpTask / DeviceManager                     | FluxManager                                   |
|----------------------------------------------|-----------------------------------------------|
| ``UpnpTask(uuid, client_key,``               | ``FluxManager(ip, key)``                      |
| ``backend_options={"password": ..})``        | + ``authorize(password)``                     |
| ``authorize_with_password(pw)``              | ``authorize_with_password(pw)``               |
| ``add_trust`` / ``list_trust`` / ``remove_trust`` | same names                               |
| ``rename`` (``set_nickname``)                | ``rename``                                    |
| ``modify_password`` (``set_password``)       | ``modify_password``                           |
| ``reset_password``                           | ``reset_password``                            |
| ``modify_network`` (``set_network``)         | ``modify_network(**options)``                 |
| ``get_wifi_list`` (``scan_wifi_access_points``) | ``get_wifi_list``                          |
| ``close``                                    | ``close``                                     |

Unlike fluxclient, ``modify_network`` reads the device's answer, so no stale frame is left in
the stream (§3.2). Errors: ``error``/``er`` answers as in ``actors.fluxfamily.errors``;
network failures are ``DeviceUnavailable``, silence ``DeviceTimeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid as uuidlib
from types import TracebackType
from typing import Any, Self

import structlog
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.fluxfamily import crypto
from actors.fluxfamily.datagram import DISCOVERY_PORT
from actors.fluxfamily.errors import device_error
from actors.fluxfamily.framing import AnswerReader, Text
from actors.fluxfamily.manage_protocol import (
    BANNER_TLS,
    CHALLENGE_SIZE,
    ManageAnswer,
    encode_request,
    network_fields,
    parse_answer,
    sign_challenge,
    uuid_from_certificate,
)
from actors.fluxfamily.tls import client_context
from bus.errors import (
    BusError,
    DeviceFault,
    DeviceTimeout,
    DeviceUnavailable,
    InvalidArguments,
)

__all__ = ["FluxManager"]

log = structlog.get_logger()


class FluxManager:
    """One management session with a device; usable as ``async with`` (connects, no auth).

    Args:
        host: Device address.
        client_key: Our RSA key.
        port: Management port (1901).
        timeout_s: Bound on connecting and on each answer.
    """

    def __init__(
        self,
        host: str,
        client_key: rsa.RSAPrivateKey,
        *,
        port: int = DISCOVERY_PORT,
        timeout_s: float = 10.0,
    ) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._key = client_key
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._answers = AnswerReader()
        self._pending: list[str] = []
        self.uuid: uuidlib.UUID | None = None
        self._challenge = b""
        self.authorized = False
        self._lock = asyncio.Lock()

    @property
    def address(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.port}"

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------ session

    async def connect(self) -> bool:
        """Connect and offer our key; return True when it is trusted (the session is authorised).

        Raises:
            DeviceUnavailable: Not reachable, or not a FLUX management port.
            DeviceTimeout: The device stopped answering.
        """
        async with self._lock:
            answer = await self._guard("connect", self._connect())
        if answer.kind == "error":
            await self.close()
            raise device_error(f"{self.address}: connect", answer.symbols)
        if answer.kind == "sign":
            assert self.uuid is not None
            async with self._lock:
                answer = await self._guard(
                    "sign", self._request_raw(sign_challenge(self._key, self.uuid, self._challenge))
                )
            self._check("sign", answer)
            self.authorized = True
        return self.authorized

    async def _connect(self) -> ManageAnswer:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        banner = await self._reader.readexactly(len(BANNER_TLS))
        if banner != BANNER_TLS:
            raise DeviceUnavailable(
                f"{self.address}: not a FLUX management port (banner {banner!r})"
            )
        await self._writer.start_tls(client_context())
        ssl_object = self._writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        try:
            self.uuid = uuid_from_certificate(der or b"")
        except ValueError as exc:
            raise DeviceUnavailable(f"{self.address}: bad device certificate: {exc}") from exc
        self._challenge = await self._reader.readexactly(CHALLENGE_SIZE)
        return await self._request_raw(crypto.public_pem(self._key).decode())

    async def authorize_with_password(self, password: str) -> None:
        """Authorise this session with the device password (it does not trust our key yet).

        Raises:
            DeviceFault: ``AUTH_ERROR``, wrong password (the device closes the session).
        """
        if self.authorized:
            return
        answer = await self._request(password, what="password")
        if answer.kind != "ok":
            await self.close()  # the device hangs up after a wrong password
        self._check("password", answer)
        self.authorized = True

    async def authorize(self, password: str | None = None, label: str = "linebus") -> None:
        """Connect and authorise: by key if trusted, else by ``password``, then trust our key.

        This is what ``UpnpTask`` does with ``backend_options={"password": ...}``; afterwards
        the robot port accepts the key.

        Raises:
            DeviceFault: ``AUTH_ERROR`` (untrusted key and no or wrong password).
        """
        if self._writer is None and await self.connect():
            return
        if self.authorized:
            return
        if password is None:
            raise DeviceFault(
                f"{self.address}: key not trusted and no password given", device_code="AUTH_ERROR"
            )
        await self.authorize_with_password(password)
        await self.add_trust(label, self._key)

    async def close(self) -> None:
        """Close the session."""
        writer, self._writer = self._writer, None
        self.authorized = False
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):  # TLS shutdown of a peer that is gone may fail
                async with asyncio.timeout(1):
                    await writer.wait_closed()

    # ------------------------------------------------------------ commands

    async def add_trust(
        self, label: str, key: rsa.RSAPublicKey | rsa.RSAPrivateKey | bytes | str
    ) -> None:
        """Trust a key (ours or another client's; PEM accepted) for robot and camera."""
        pem = (
            key
            if isinstance(key, str)
            else key.decode()
            if isinstance(key, bytes)
            else crypto.public_pem(key).decode()
        )
        await self._command("add_trust", label, pem)

    async def list_trust(self) -> list[dict[str, Any]]:
        """The trust list: ``[{"access_id", "label", "type"}, ...]``."""
        return [answer.data for answer in await self._command("list_trust")]

    async def remove_trust(self, access_id: str) -> None:
        """Stop trusting a key (``NOT_FOUND`` if unknown)."""
        await self._command("remove_trust", access_id)

    async def rename(self, name: str) -> None:
        """Set the device nickname (at most 128 bytes)."""
        await self._command("rename", name)

    async def modify_password(
        self, old_password: str, new_password: str, reset_acl: bool = True
    ) -> None:
        """Change the password; ``reset_acl`` also clears the trust list."""
        await self._command("passwd", old_password, new_password, "Y" if reset_acl else "F")

    async def reset_password(self, new_password: str) -> None:
        """Set a new password without the old one (clears the trust list)."""
        await self._command("reset_passwd", new_password)

    async def modify_network(self, **options: str) -> None:
        """Change the network (``method=dhcp|static``, ``ssid``, ``psk`` ...; ifname wlan0)."""
        try:
            fields = network_fields(options)
        except ValueError as exc:
            raise InvalidArguments(str(exc), details={"argument": "options"}) from exc
        await self._command("network", *fields)

    async def get_wifi_list(self) -> list[dict[str, Any]]:
        """Access points the device sees: ssid, bssid, rssi, encrypt, security."""
        return [answer.data for answer in await self._command("scan_wifi")]

    # ------------------------------------------------------------ internals

    def _check(self, what: str, answer: ManageAnswer) -> None:
        if answer.kind == "error":
            raise device_error(f"{self.address}: {what}", answer.symbols)
        if answer.kind != "ok":
            raise DeviceFault(
                f"{self.address}: {what}: unexpected answer {answer.text[:80]!r}",
                device_code="BAD_PROTOCOL",
            )

    async def _command(self, *fields: str) -> list[ManageAnswer]:
        if not self.authorized:
            raise DeviceFault(
                f"{self.address}: {fields[0]}: not authorised", device_code="AUTH_ERROR"
            )
        async with self._lock:
            data: list[ManageAnswer] = []

            async def exchange() -> ManageAnswer:
                answer = await self._request_raw("\x00".join(fields))
                while answer.kind == "data":
                    data.append(answer)
                    answer = await self._next_answer()
                return answer

            final = await self._guard(fields[0], exchange())
        self._check(fields[0], final)
        return data

    async def _request(self, text: str, *, what: str) -> ManageAnswer:
        async with self._lock:
            return await self._guard(what, self._request_raw(text))

    async def _request_raw(self, text: str) -> ManageAnswer:
        if self._writer is None:
            raise DeviceUnavailable(f"{self.address}: not connected")
        self._writer.write(encode_request(text))
        await self._writer.drain()
        return await self._next_answer()

    async def _next_answer(self) -> ManageAnswer:
        assert self._reader is not None
        while not self._pending:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionResetError("device closed the session")
            self._pending.extend(
                event.text for event in self._answers.feed(data) if isinstance(event, Text)
            )
        return parse_answer(self._pending.pop(0))

    async def _guard(self, what: str, work: Any) -> ManageAnswer:
        """Bound ``work`` by the timeout and map its failures (closing the session on any)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await work  # type: ignore[no-any-return]
        except BusError:
            await self.close()
            raise
        except TimeoutError as exc:
            await self.close()
            raise DeviceTimeout(
                f"{self.address}: {what}: no answer within {self.timeout_s} s"
            ) from exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            await self.close()
            raise DeviceUnavailable(f"{self.address}: {what}: {exc}") from exc
        except BaseException:
            await self.close()  # cancelled mid-exchange: the stream is out of step
            raise
