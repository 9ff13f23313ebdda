"""The simulator's management server on TCP 1901 (flux.md §3.2): banner, TLS, key or password.

Wi-fi scans return a fixed list; ``network`` answers ``ok`` and records the settings without
touching any interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl

import structlog

from actors.flux.sim_device import SimDevice
from actors.flux.sim_storage import SimError
from actors.fluxfamily import crypto
from actors.fluxfamily.framing import CommandReader, ProtocolViolation, Text, encode_answer
from actors.fluxfamily.manage_protocol import BANNER_TLS, CHALLENGE_SIZE

__all__ = ["WIFI_ACCESS_POINTS", "ManageServer"]

log = structlog.get_logger()

WIFI_ACCESS_POINTS = [
    {
        "ssid": "line-4",
        "bssid": "02:00:00:00:00:04",
        "rssi": -48,
        "encrypt": True,
        "security": "WPA2-PSK",
    },
    {"ssid": "guest", "bssid": "02:00:00:00:00:05", "rssi": -71, "encrypt": False, "security": ""},
]


class ManageServer:
    """Serves management sessions for one ``SimDevice``.

    Args:
        device: The device.
        tls: Server TLS context holding the device certificate.
    """

    def __init__(self, device: SimDevice, tls: ssl.SSLContext) -> None:
        self.device = device
        self.tls = tls
        self.networks: list[dict[str, str]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection until it closes."""
        try:
            writer.write(BANNER_TLS)
            await writer.drain()
            await writer.start_tls(self.tls)
            await self._session(reader, writer)
        except (OSError, ssl.SSLError, ProtocolViolation) as exc:
            log.info("flux_sim_manage_closed", reason=str(exc))
        finally:
            with contextlib.suppress(Exception):  # the peer may be gone already
                writer.close()

    async def _frames(
        self, reader: asyncio.StreamReader, commands: CommandReader, pending: list[str]
    ) -> str | None:
        while not pending:
            data = await reader.read(65536)
            if not data:
                return None
            pending.extend(event.text for event in commands.feed(data) if isinstance(event, Text))
        return pending.pop(0)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def send(text: str) -> None:
            writer.write(encode_answer(text))

        challenge = os.urandom(CHALLENGE_SIZE)
        writer.write(challenge)
        commands, pending = CommandReader(), list[str]()
        pem = await self._frames(reader, commands, pending)
        if pem is None:
            return
        try:
            client = crypto.load_public_key(pem.encode())
        except ValueError:
            send("error BAD_PARAMS")
            return
        trusted = crypto.access_id(client).hex() in self.device.trust
        send("sign" if trusted else "password")
        proof = await self._frames(reader, commands, pending)
        if proof is None:
            return
        if trusted:
            try:
                good = crypto.verify(
                    client,
                    bytes.fromhex(proof),
                    crypto.hmac_sha1(self.device.uuid.bytes, challenge),
                )
            except ValueError:
                good = False
        else:
            good = not self.device.password or proof == self.device.password
        if not good:
            send("error AUTH_ERROR")
            await writer.drain()
            return
        send("ok")
        while (text := await self._frames(reader, commands, pending)) is not None:
            try:
                for answer in self.command(text.split("\x00")):
                    send(answer)
            except SimError as exc:
                send("error " + " ".join(exc.symbols))
            await writer.drain()

    def command(self, fields: list[str]) -> list[str]:
        """Answer one request; returns the answer frames."""
        device = self.device
        name, args = fields[0], fields[1:]
        if name == "add_trust" and len(args) == 2:
            try:
                key = crypto.load_public_key(args[1].encode())
            except ValueError:
                raise SimError("UNKNOWN_ERROR") from None
            device.add_trust(key, args[0])
            return ["ok"]
        if name == "list_trust":
            rows = [
                {"access_id": ident, "label": entry.label, "type": entry.kind}
                for ident, entry in device.trust.items()
            ]
            return [f"data {json.dumps(row)}" for row in rows] + ["ok"]
        if name == "remove_trust" and len(args) == 1:
            if device.trust.pop(args[0], None) is None:
                raise SimError("NOT_FOUND")
            return ["ok"]
        if name == "rename" and len(args) == 1:
            if not args[0] or len(args[0].encode()) > 128:
                raise SimError("BAD_PARAMS")
            device.name = args[0]
            device.bump_metadata()
            return ["ok"]
        if name == "passwd" and len(args) in (2, 3):
            if device.password and args[0] != device.password:
                raise SimError("AUTH_ERROR")
            device.password = args[1]
            if len(args) == 2 or args[2] == "Y":
                device.trust.clear()
            device.bump_metadata()
            return ["ok"]
        if name == "reset_passwd" and len(args) == 1:
            device.password = args[0]
            device.trust.clear()
            return ["ok"]
        if name == "network":
            options = dict(item.partition("=")[::2] for item in args)
            if options.get("method") not in ("dhcp", "static"):
                return ["er BAD_PARAMS method"]
            self.networks.append(options)
            return ["ok"]
        if name == "scan_wifi":
            return [f"data {json.dumps(row)}" for row in WIFI_ACCESS_POINTS] + ["ok"]
        raise SimError("UNKNOWN_COMMAND")
