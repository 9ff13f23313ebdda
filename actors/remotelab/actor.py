"""``RemoteLabActor``: the rerobots remote-lab API and its instances on the bus.

Options (the ``[actor.options]`` table, read into ``RemoteLabOptions``)::

    [actor.options]
    base_uri = "https://api.rerobots.net"     # the default; the simulator: "http://127.0.0.1:PORT"
    api_token_file = "/etc/linebus/rerobots-token"   # or api_token_env = "...", or $REROBOTS_API_TOKEN
    state_file = "var/remotelab/lab.json"     # instances and their SSH keys, 0600
    # verify_tls, request_timeout_s, retries, backoff_initial_s, backoff_max_s, ready_poll_s,
    # ssh_connect_timeout_s, ssh_auth_timeout_s, ssh_keepalive_s, transfer_chunk_bytes
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from actors.remotelab import protocol
from actors.remotelab.config import TOKEN_ENV, RemoteLabOptions
from actors.remotelab.driver import ApiSession, InstanceRecord, InstanceStore, SshSession
from actors.remotelab.protocol import Api, InstanceConnection
from bus.actor import Actor, CommandContext, command
from bus.errors import DeviceFault, DeviceTimeout, DeviceUnavailable, InvalidArguments
from bus.options import from_table

__all__ = ["ACTOR", "RemoteLabActor"]

T = TypeVar("T")

#: Deadline of a blocking call made outside any request (start-up, stop).
_LOCAL_DEADLINE_S = 30.0
_TERMINAL = ("TERMINATED", "TERMINATING", "INIT_FAIL")


def _not_ready(instance_id: str, status: str) -> DeviceFault:
    return DeviceFault(
        f"instance {instance_id} not ready (status {status})",
        device_code="Error",
        details={"exception": "Error", "status": status},
    )


class RemoteLabActor(Actor):
    """The rerobots remote-lab API (workspace deployments, instances, add-ons) and SSH to instances.

    Every ``rerobots.api.APIClient`` operation on deployments, instances, add-ons (cam,
    mistyproxy, drive, vnc), firewall rules and reservations is a command of the same name and
    arguments, and every ``rerobots.Instance`` operation too, with the instance's id as
    ``instance_id`` (access rules, token revocation, purge and CI projects are not covered). The
    actor holds the API token and the instances' SSH keys (never sent on the bus unless asked for
    with ``request_instance(include_sshkey=True)``); its state file lets it re-attach to its
    instances after a restart, and it re-opens their SSH connections on demand.

    API errors are ``device_fault`` with the published client's exception name in
    ``details['exception']`` (``WrongAuthToken``, ``BusyWorkspaceDeployment``,
    ``BusyWorkspaceInstance``, ``InstanceNotFound``, ``Error``) and the HTTP status; a 5xx or no
    connection is ``device_unavailable``, a request past its deadline ``device_timeout``.
    Commands run concurrently (one instance's long command does not hold up another's), except
    ``wait_until_ready``: waits run one at a time.
    """

    kind = "remotelab"

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self.config = from_table(RemoteLabOptions, self.options, f"remotelab {name}", noun="option")
        token = self.config.api_token or os.environ.get(TOKEN_ENV) or None
        self._token_source = (
            "options" if self.config.api_token else ("environment" if token else "none")
        )
        self.api = Api(token)
        self.http = ApiSession(self.config)
        self.store = InstanceStore(self.config.state_file)
        self._ssh: dict[str, SshSession] = {}
        self._ssh_lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        """Read the state file (the instances to re-attach to); the API is not contacted."""
        await asyncio.to_thread(self.store.load)
        if self._token_source == "none":
            self.log.warning(
                "remotelab_no_token",
                hint=f"set api_token_file / api_token_env in the options, or ${TOKEN_ENV}",
            )
        if self.store.ids():
            self.log.info("remotelab_reattached", instances=len(self.store.ids()))

    async def on_stop(self) -> None:
        """Close SSH connections and the HTTP session (instances keep running)."""
        with self._ssh_lock:
            sessions = list(self._ssh.values())
            self._ssh.clear()
        for session in sessions:
            await asyncio.to_thread(session.close)
        self.http.close()

    def describe_extra(self) -> dict[str, Any]:
        """The API's address and whether a token is configured (never the token itself)."""
        return {
            "api": {
                "base_uri": self.config.base_uri,
                "verify_tls": self.config.verify_tls,
                "token": self._token_source,
            },
            "instances": self.store.ids(),
            "ssh_open": sorted(iid for iid, s in self._ssh.items() if s.alive),
        }

    def device_addresses(self) -> list[str]:
        """The API's base URI (what ``rerobots.api.APIClient(base_uri=...)`` takes)."""
        return [self.config.base_uri]

    # ------------------------------------------------------------ plumbing

    async def _blocking(
        self, fn: Callable[[threading.Event], T], ctx: CommandContext | None = None
    ) -> T:
        """Run ``fn(cancel)`` in a thread of its own; a cancelled command sets ``cancel``.

        The threads are daemons: an HTTP request the API never answers (it ends at its
        ``request_timeout_s``) does not hold up the actor's exit.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        cancel = threading.Event()

        def settle(outcome: Callable[[], None]) -> None:
            if not future.done():
                outcome()

        def run() -> None:
            try:
                result = fn(cancel)
            except BaseException as exc:  # handed to the awaiting command, which raises it
                error = exc
                self._to_loop(loop, settle, lambda: future.set_exception(error))
            else:
                self._to_loop(loop, settle, lambda: future.set_result(result))

        threading.Thread(target=run, name=f"remotelab-{self.name}", daemon=True).start()
        try:
            return await future
        except asyncio.CancelledError:
            cancel.set()
            raise

    @staticmethod
    def _to_loop(
        loop: asyncio.AbstractEventLoop,
        settle: Callable[[Callable[[], None]], None],
        outcome: Callable[[], None],
    ) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, outcome)

    def _deadline(self, ctx: CommandContext | None) -> float:
        return ctx.deadline if ctx is not None else time.monotonic() + _LOCAL_DEADLINE_S

    @staticmethod
    def _on_loop(fn: Callable[..., object]) -> Callable[..., None]:
        """``fn`` made callable from a worker thread: it runs on the loop (as progress must)."""
        loop = asyncio.get_running_loop()

        def call(*args: Any) -> None:
            loop.call_soon_threadsafe(fn, *args)

        return call

    async def _api(
        self,
        request: protocol.HttpRequest,
        parse: Callable[[protocol.HttpRequest, protocol.HttpResponse], T],
        ctx: CommandContext | None,
    ) -> T:
        deadline = self._deadline(ctx)
        return await self._blocking(
            lambda cancel: self.http.call(request, parse, deadline, cancel), ctx
        )

    # ------------------------------------------------------------ APIClient: deployments

    @command(concurrent=True)
    async def get_wtypes(self, ctx: CommandContext) -> list[str]:
        """The workspace types (``GET /workspaces``)."""
        return await self._api(self.api.get_wtypes(), protocol.parse_wtypes, ctx)

    @command(concurrent=True)
    async def get_wdeployments(
        self,
        ctx: CommandContext,
        query: str | None = None,
        maxlen: int | None = None,
        types: list[str] | None = None,
        page: int | None = None,
        max_per_page: int | None = None,
    ) -> dict[str, Any]:
        """Workspace deployments: ``{"deployments": [{id, type, region, queuelen}], "page_count"}``.

        ``query`` searches, ``types`` keeps those types, ``maxlen`` bounds the queue length,
        ``page`` / ``max_per_page`` page (``page_count`` is None when the API does not say).
        """
        request = self.api.get_wdeployments(query, maxlen, types, page, max_per_page)
        rows, page_count = await self._api(request, protocol.parse_deployments, ctx)
        return {"deployments": [row.as_dict() for row in rows], "page_count": page_count}

    @command(concurrent=True)
    async def get_wdeployment_info(
        self, wdeployment_id: str, ctx: CommandContext
    ) -> dict[str, Any]:
        """Everything the API says of one deployment (type, supported_addons, region, queuelen...)."""
        request = self.api.get_wdeployment_info(wdeployment_id)
        return await self._api(request, protocol.parse_json, ctx)

    # ------------------------------------------------------------ APIClient: instances

    @command(concurrent=True)
    async def get_instances(
        self,
        ctx: CommandContext,
        include_terminated: bool = False,
        page: int | None = None,
        max_per_page: int | None = None,
    ) -> dict[str, Any]:
        """Your instances: ``{"instances": [id, ...], "page_count"}``."""
        request = self.api.get_instances(include_terminated, page, max_per_page)
        ids, page_count = await self._api(request, protocol.parse_instances, ctx)
        return {"instances": ids, "page_count": page_count}

    @command(concurrent=True)
    async def get_instance_info(self, instance_id: str, ctx: CommandContext) -> dict[str, Any]:
        """Everything the API says of one instance (status, deployment, fwd, hostkeys...)."""
        info = await self._api(
            self.api.get_instance_info(instance_id), protocol.parse_instance_info, ctx
        )
        if info.get("status") == "TERMINATED" and self.store.get(instance_id) is not None:
            # Ended elsewhere (the web UI, its owner, its timer): forget its key and connection.
            await self._drop_ssh(instance_id)
            await asyncio.to_thread(self.store.remove, instance_id)
        else:
            await asyncio.to_thread(self._remember_conn, instance_id, info)
        return info

    @command(concurrent=True, privileged=True)
    async def request_instance(
        self,
        type_or_wdeployment_id: str,
        ctx: CommandContext,
        sshkey: str | None = None,
        vpn: bool = False,
        reserve: bool = False,
        event_url: str | None = None,
        duration: int | None = None,
        include_sshkey: bool = False,
    ) -> dict[str, Any]:
        """Request a new instance of a deployment (or of a type): ``{"success", "id"}``.

        Without ``sshkey`` (a public key line) the API issues a key pair; the actor keeps the
        private key for its SSH commands, and returns it as ``sshkey`` only with
        ``include_sshkey`` (as the published client does). Fails with ``BusyWorkspaceDeployment``
        when every matching deployment is taken.
        """
        request = self.api.request_instance(
            type_or_wdeployment_id, sshkey, vpn, reserve, event_url, duration
        )
        payload = await self._api(request, protocol.parse_new_instance, ctx)
        instance_id = str(payload["id"])
        issued = payload.get("sshkey")
        if payload.get("success", True):
            record = InstanceRecord(
                instance_id,
                deployment=type_or_wdeployment_id,
                sshkey=issued if isinstance(issued, str) else None,
            )
            await asyncio.to_thread(self.store.put, record)
        answer = {k: v for k, v in payload.items() if k != "sshkey"}
        if include_sshkey and issued is not None:
            answer["sshkey"] = issued
        return answer

    @command(concurrent=True, privileged=True)
    async def terminate_instance(self, instance_id: str, ctx: CommandContext) -> None:
        """Terminate an instance (``BusyWorkspaceInstance`` if it cannot be now)."""
        request = self.api.terminate_instance(instance_id)
        await self._api(request, protocol.check_ok, ctx)
        await self._drop_ssh(instance_id)
        await asyncio.to_thread(self.store.remove, instance_id)

    @command(concurrent=True, privileged=True)
    async def get_vpn_newclient(self, instance_id: str, ctx: CommandContext) -> dict[str, Any]:
        """A new OpenVPN client of the instance: ``{"client_id", "ovpn"}`` (a config file's text)."""
        request = self.api.get_vpn_newclient(instance_id)
        return await self._api(request, protocol.parse_json, ctx)

    # ------------------------------------------------------------ APIClient: add-ons

    async def _addon(
        self,
        addon: Literal["cam", "mistyproxy", "drive", "vnc"],
        action: Literal["activate", "deactivate"],
        instance_id: str,
        ctx: CommandContext,
    ) -> None:
        await self._api(self.api.addon(addon, action, instance_id), protocol.check_ok, ctx)

    async def _addon_status(
        self,
        addon: Literal["cam", "mistyproxy", "drive", "vnc"],
        instance_id: str,
        ctx: CommandContext,
    ) -> dict[str, Any]:
        request = self.api.addon(addon, "status", instance_id)
        status = await self._api(request, protocol.parse_addon_status, ctx)
        return status.as_dict()

    @command(concurrent=True, privileged=True)
    async def activate_addon_cam(self, instance_id: str, ctx: CommandContext) -> None:
        """Activate the cam add-on (poll ``status_addon_cam`` until ``active``)."""
        await self._addon("cam", "activate", instance_id, ctx)

    @command(concurrent=True)
    async def status_addon_cam(self, instance_id: str, ctx: CommandContext) -> dict[str, Any]:
        """``{"status": "notfound" | "starting" | "active", ...}``."""
        return await self._addon_status("cam", instance_id, ctx)

    @command(concurrent=True, privileged=True)
    async def deactivate_addon_cam(self, instance_id: str, ctx: CommandContext) -> None:
        """Deactivate the cam add-on."""
        await self._addon("cam", "deactivate", instance_id, ctx)

    @command(concurrent=True)
    async def get_snapshot_cam(
        self, instance_id: str, ctx: CommandContext, camera_id: int = 0
    ) -> dict[str, Any]:
        """One camera frame: ``{"success": true, "format": "JPEG", "data": <JPEG bytes>}``.

        Fails with ``Error`` ("not found, or cam add-on not active") while the add-on is inactive.
        """
        request = self.api.get_snapshot_cam(instance_id, camera_id)
        snapshot = await self._api(
            request, lambda rq, rs: protocol.parse_snapshot(rq, rs, instance_id), ctx
        )
        return {"success": True, "format": snapshot.format, "data": snapshot.data}

    @command(concurrent=True, privileged=True)
    async def activate_addon_mistyproxy(self, instance_id: str, ctx: CommandContext) -> None:
        """Activate the mistyproxy add-on (new proxy URLs on each activation)."""
        await self._addon("mistyproxy", "activate", instance_id, ctx)

    @command(concurrent=True)
    async def status_addon_mistyproxy(
        self, instance_id: str, ctx: CommandContext
    ) -> dict[str, Any]:
        """``{"status": ..., "url": [http, websocket]}`` once active; ``notfound`` when not."""
        return await self._addon_status("mistyproxy", instance_id, ctx)

    @command(concurrent=True, privileged=True)
    async def deactivate_addon_mistyproxy(self, instance_id: str, ctx: CommandContext) -> None:
        """Deactivate the mistyproxy add-on."""
        await self._addon("mistyproxy", "deactivate", instance_id, ctx)

    # drive and vnc

    @command(concurrent=True, privileged=True)
    async def activate_addon_drive(self, instance_id: str, ctx: CommandContext) -> None:
        """Activate the drive add-on (motion commands for mobile robots)."""
        await self._addon("drive", "activate", instance_id, ctx)

    @command(concurrent=True)
    async def status_addon_drive(self, instance_id: str, ctx: CommandContext) -> dict[str, Any]:
        """The drive add-on's status (``notfound`` when not active)."""
        return await self._addon_status("drive", instance_id, ctx)

    @command(concurrent=True, privileged=True)
    async def deactivate_addon_drive(self, instance_id: str, ctx: CommandContext) -> None:
        """Deactivate the drive add-on."""
        await self._addon("drive", "deactivate", instance_id, ctx)

    @command(concurrent=True, privileged=True)
    async def send_drive_command(
        self, instance_id: str, ctx: CommandContext, command: dict[str, Any] | None = None
    ) -> None:
        """Send a motion command through the drive add-on; none: stop (linearv 0, angularv 0)."""
        request = self.api.send_drive_command(instance_id, command)
        await self._api(request, protocol.check_ok, ctx)

    @command(concurrent=True, privileged=True)
    async def activate_addon_vnc(self, instance_id: str, ctx: CommandContext) -> None:
        """Activate the vnc add-on."""
        await self._addon("vnc", "activate", instance_id, ctx)

    @command(concurrent=True)
    async def status_addon_vnc(self, instance_id: str, ctx: CommandContext) -> dict[str, Any]:
        """The vnc add-on's status (``notfound`` when not active)."""
        return await self._addon_status("vnc", instance_id, ctx)

    @command(concurrent=True, privileged=True)
    async def start_addon_vnc(self, instance_id: str, ctx: CommandContext) -> None:
        """Start the VNC server of the vnc add-on."""
        await self._api(self.api.vnc("start", instance_id), protocol.check_ok, ctx)

    @command(concurrent=True, privileged=True)
    async def stop_addon_vnc(self, instance_id: str, ctx: CommandContext) -> None:
        """Stop the VNC server of the vnc add-on."""
        await self._api(self.api.vnc("stop", instance_id), protocol.check_ok, ctx)

    @command(concurrent=True, privileged=True)
    async def deactivate_addon_vnc(self, instance_id: str, ctx: CommandContext) -> None:
        """Deactivate the vnc add-on."""
        await self._addon("vnc", "deactivate", instance_id, ctx)

    # ------------------------------------------------------------ APIClient: firewall, reservations

    @command(concurrent=True)
    async def get_firewall_rules(self, instance_id: str, ctx: CommandContext) -> list[Any]:
        """The instance's firewall rules."""
        request = self.api.get_firewall_rules(instance_id)
        return await self._api(request, protocol.parse_list("rules"), ctx)

    @command(concurrent=True, privileged=True)
    async def add_firewall_rule(
        self,
        instance_id: str,
        action: Literal["ACCEPT", "DROP", "REJECT"],
        ctx: CommandContext,
        source_address: str | None = None,
    ) -> None:
        """Add a firewall rule: ``action`` for packets from ``source_address`` (default: any)."""
        request = self.api.add_firewall_rule(instance_id, action, source_address)
        await self._api(request, protocol.check_ok, ctx)

    @command(concurrent=True, privileged=True)
    async def flush_firewall_rules(self, instance_id: str, ctx: CommandContext) -> None:
        """Remove every firewall rule of the instance."""
        await self._api(self.api.flush_firewall_rules(instance_id), protocol.check_ok, ctx)

    @command(concurrent=True)
    async def get_reservations(self, ctx: CommandContext) -> list[Any]:
        """Your reservations (requests with ``reserve`` that wait for a deployment)."""
        request = self.api.get_reservations()
        return await self._api(request, protocol.parse_list("reservations"), ctx)

    @command(concurrent=True, privileged=True)
    async def cancel_reservation(self, reservation_id: str, ctx: CommandContext) -> None:
        """Cancel a reservation."""
        await self._api(self.api.cancel_reservation(reservation_id), protocol.check_ok, ctx)

    # ------------------------------------------------------------ Instance

    def _remember_conn(self, instance_id: str, info: dict[str, Any]) -> None:
        conn = InstanceConnection.from_info(info)
        record = self.store.get(instance_id)
        if conn is not None and record is not None and record.conn != conn:
            record.conn = conn
            self.store.put(record)

    @command(concurrent=True)
    async def get_status(self, instance_id: str, ctx: CommandContext) -> str:
        """The instance's status: ``INIT``, ``READY``, ``INIT_FAIL``, ``TERMINATING``, ``TERMINATED``."""
        info = await self.get_instance_info(instance_id, ctx)
        return str(info["status"])

    @command(concurrent=True)
    async def get_details(self, instance_id: str, ctx: CommandContext) -> dict[str, Any]:
        """``{type, region, starttime, status, conn?: {type: "sshtun", ipv4, port, hostkeys}}``."""
        info = await self.get_instance_info(instance_id, ctx)
        details = {k: info.get(k) for k in ("type", "region", "starttime", "status")}
        fwd = info.get("fwd")
        if isinstance(fwd, dict):
            conn: dict[str, Any] = {"type": "sshtun"}
            for key in ("ipv4", "port"):
                if key in fwd:
                    conn[key] = fwd[key]
            if "hostkeys" in info:
                conn["hostkeys"] = info["hostkeys"]
            details["conn"] = conn
        return details

    @command
    async def wait_until_ready(
        self, instance_id: str, ctx: CommandContext, timeout_s: float = 300.0
    ) -> dict[str, Any]:
        """Poll the instance until it is ``READY``; return ``get_details``.

        Progress ``{"status", "elapsed_s"}`` after the first poll and on each change of status;
        a poll that fails for a passing reason (timeout, no connection, 5xx) is reported as
        ``{"status": <last known or None>, "elapsed_s", "error"}`` and polling goes on. Fails
        with ``Error`` if the instance ends in INIT_FAIL or is terminated, ``InstanceNotFound``
        for an unknown id, ``device_timeout`` if it is not ready within ``timeout_s``. Waits run
        one at a time (a second one queues); every other command runs beside them.
        """
        started = time.monotonic()
        end = min(started + timeout_s, ctx.deadline - 0.2)
        last: str | None = None
        reported = False
        while True:
            error: str | None = None
            try:
                info = await self.get_instance_info(instance_id, ctx)
            except (DeviceTimeout, DeviceUnavailable) as exc:
                error = exc.message
                status = last
            else:
                status = str(info["status"])
            elapsed = round(time.monotonic() - started, 2)
            if error is not None:
                ctx.progress({"status": status, "elapsed_s": elapsed, "error": error})
                reported = True
            elif status != last or not reported:
                ctx.progress({"status": status, "elapsed_s": elapsed})
                last, reported = status, True
            if status == "READY" and error is None:
                return await self.get_details(instance_id, ctx)
            if status in _TERMINAL:
                raise _not_ready(instance_id, str(status))
            if time.monotonic() + self.config.ready_poll_s > end:
                raise DeviceTimeout(
                    f"instance {instance_id} still {status} after {elapsed:.1f} s",
                    details={"exception": "TimeoutError", "status": status},
                )
            await asyncio.sleep(self.config.ready_poll_s)

    @command(concurrent=True, privileged=True)
    async def attach(self, instance_id: str, sshkey: str, ctx: CommandContext) -> None:
        """Give the actor the private key (PEM) of an instance it did not start, for SSH."""
        protocol_key = sshkey.strip()
        if "PRIVATE KEY" not in protocol_key:
            raise InvalidArguments(
                "sshkey must be a private key (PEM)", details={"argument": "sshkey"}
            )
        record = self.store.get(instance_id) or InstanceRecord(instance_id)
        record.sshkey = protocol_key + "\n"
        await asyncio.to_thread(self.store.put, record)
        await self._drop_ssh(instance_id)

    async def _session(self, instance_id: str, ctx: CommandContext) -> SshSession:
        """The instance's SSH session (made from its record and, if needed, a fresh status)."""
        with self._ssh_lock:
            session = self._ssh.get(instance_id)
        if session is not None:
            return session
        record = self.store.get(instance_id)
        if record is None or record.sshkey is None:
            raise DeviceFault(
                f"no SSH key for instance {instance_id}: it was not started by this actor "
                "(give its key with attach)",
                device_code="Error",
                details={"exception": "Error"},
            )
        info = await self.get_instance_info(instance_id, ctx)
        if info["status"] != "READY":
            raise _not_ready(instance_id, str(info["status"]))
        conn = InstanceConnection.from_info(info) or record.conn
        if conn is None:
            raise DeviceFault(
                f"the API published no SSH address or host key for instance {instance_id}",
                device_code="Error",
                details={"exception": "Error"},
            )
        key = record.sshkey
        session = await asyncio.to_thread(SshSession, conn, key, self.config)
        with self._ssh_lock:
            return self._ssh.setdefault(instance_id, session)

    async def _drop_ssh(self, instance_id: str) -> None:
        with self._ssh_lock:
            session = self._ssh.pop(instance_id, None)
        if session is not None:
            await asyncio.to_thread(session.close)

    @command(concurrent=True, privileged=True)
    async def start_sshclient(self, instance_id: str, ctx: CommandContext) -> None:
        """Open SSH to a READY instance, checking its host key against the one the API published."""
        session = await self._session(instance_id, ctx)
        await self._blocking(lambda _cancel: session.connect(), ctx)

    @command(concurrent=True, privileged=True)
    async def stop_sshclient(self, instance_id: str) -> None:
        """Close the instance's SSH connection (it is re-opened by the next SSH command).

        Privileged: it breaks the commands and transfers running on that connection.
        """
        await self._drop_ssh(instance_id)

    @command(concurrent=True, privileged=True)
    async def exec_ssh(
        self, instance_id: str, command: str, ctx: CommandContext, timeout: float | None = None
    ) -> dict[str, Any]:
        """Run ``command`` on the instance: ``{"exit_status", "stdout", "stderr"}`` (bytes).

        Output is streamed as progress ``{"stream": "stdout" | "stderr", "data": bytes}``.
        ``timeout`` (seconds; default: the request's deadline) stops the command; cancelling it
        stops it too. A dead SSH connection is re-opened first.
        """
        session = await self._session(instance_id, ctx)
        deadline = ctx.deadline - 0.1
        if timeout is not None:
            if timeout <= 0:
                raise InvalidArguments("timeout must be positive", details={"argument": "timeout"})
            deadline = min(deadline, time.monotonic() + timeout)
        report = self._on_loop(ctx.progress)
        result = await self._blocking(
            lambda cancel: session.exec(
                command, deadline, cancel, lambda s, d: report({"stream": s, "data": d})
            ),
            ctx,
        )
        return {"exit_status": result.exit_status, "stdout": result.stdout, "stderr": result.stderr}

    @command(concurrent=True, privileged=True)
    async def put_file(
        self, instance_id: str, remotepath: str, data: bytes, ctx: CommandContext
    ) -> dict[str, Any]:
        """Write ``data`` to ``remotepath`` on the instance over SFTP: ``{"path", "size"}``.

        Progress ``{"done", "total"}``; cancellable.
        """
        session = await self._session(instance_id, ctx)
        on_progress = self._on_loop(ctx.byte_progress())
        deadline = ctx.deadline - 0.1
        size = await self._blocking(
            lambda cancel: session.put(remotepath, data, deadline, cancel, on_progress), ctx
        )
        return {"path": remotepath, "size": size}

    @command(concurrent=True, privileged=True)
    async def get_file(self, instance_id: str, remotepath: str, ctx: CommandContext) -> bytes:
        """Read ``remotepath`` from the instance over SFTP; progress ``{"done", "total"}``."""
        session = await self._session(instance_id, ctx)
        on_progress = self._on_loop(ctx.byte_progress())
        deadline = ctx.deadline - 0.1
        return await self._blocking(
            lambda cancel: session.get(remotepath, deadline, cancel, on_progress), ctx
        )

    @command(concurrent=True, privileged=True)
    async def terminate(self, instance_id: str, ctx: CommandContext) -> None:
        """Close SSH and terminate the instance (``Instance.terminate``)."""
        await self._drop_ssh(instance_id)
        await self.terminate_instance(instance_id, ctx)


ACTOR = RemoteLabActor
