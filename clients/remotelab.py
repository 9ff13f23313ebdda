"""The published ``rerobots`` client's surface over linebus: ``APIClient`` and ``Instance``.

The seed's tutorial reads the same; the ``remotelab`` actor holds the API token and the
instances' SSH keys, and does the HTTP and SSH::

    from clients.remotelab import APIClient, Instance

    apic = APIClient(bus="tcp://127.0.0.1:7750", service="lab")
    apic.get_wdeployments(query="misty")
    rri = Instance(wdeployment_id="3a65acd4-...", apic=apic)
    while rri.get_status() != "READY":
        time.sleep(1)                       # or rri.wait_until_ready() with progress
    rri.activate_addon_cam()
    frame = rri.get_snapshot_cam()["data"]  # JPEG bytes (dformat="ndarray": needs numpy, Pillow)
    rri.start_sshclient()
    print(rri.exec_ssh("pwd"))
    rri.get_file("/etc/hosts", "hosts")
    rri.terminate()

Errors raise the classes ``rerobots.api`` names (``Error`` and its subclasses
``WrongAuthToken``, ``BusyWorkspaceDeployment``, ``BusyWorkspaceInstance``,
``InstanceNotFound``); a bus failure (actor down, deadline) is an ``Error`` too, with the bus
error's ``code``. Local files are read and written here, on the caller's machine.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from bus.client import Call, Client
from bus.errors import BusError
from clients._session import BusSession, connect_bus
from clients._vendor import find_service

__all__ = [
    "APIClient",
    "BusyWorkspaceDeployment",
    "BusyWorkspaceInstance",
    "Error",
    "FileAttributes",
    "Instance",
    "InstanceNotFound",
    "WrongAuthToken",
]

#: The remote-lab actor's kind, which the broker's ``lookup`` asks for when no service is named.
KIND = "remotelab"


class Error(Exception):
    """Base of the remote lab's errors (``rerobots.api.Error``).

    Attributes:
        code: The linebus error code (``device_fault`` for the API's refusals,
            ``device_unavailable``, ``device_timeout``, ``deadline_exceeded``, ``unavailable`` ...).
        details: Every machine-readable detail (``exception``, ``status`` ...).
    """

    def __init__(
        self, message: str = "", code: str = "device_fault", details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.details = dict(details or {})


class BusyWorkspaceDeployment(Error):
    """Every matching workspace deployment is taken."""


class BusyWorkspaceInstance(Error):
    """The instance cannot be terminated now."""


class InstanceNotFound(Error):
    """No instance with that id."""


class WrongAuthToken(Error):
    """The API refused the actor's token."""


_CLASSES: dict[str, type[Error]] = {
    cls.__name__: cls
    for cls in (
        Error,
        BusyWorkspaceDeployment,
        BusyWorkspaceInstance,
        InstanceNotFound,
        WrongAuthToken,
    )
}
_BUILTINS: dict[str, type[Exception]] = {
    "FileNotFoundError": FileNotFoundError,
    "OSError": OSError,
    "TimeoutError": TimeoutError,
}


def _raise(exc: BusError) -> Exception:
    """The exception ``rerobots`` would raise for this bus error."""
    code = getattr(exc, "remote_code", None) or exc.code
    name = exc.details.get("exception")
    builtin = _BUILTINS.get(name) if isinstance(name, str) else None
    if builtin is not None and code in ("device_fault", "device_timeout"):
        return builtin(exc.message)
    cls = _CLASSES.get(name, Error) if isinstance(name, str) else Error
    return cls(exc.message, code, exc.details)


@dataclass(frozen=True, slots=True)
class FileAttributes:
    """What ``put_file`` returns (paramiko's ``SFTPAttributes`` in the published client)."""

    st_size: int
    path: str


class APIClient(BusSession):
    """The rerobots API through the ``remotelab`` actor ``service``.

    Args:
        api_token: Accepted for the published signature (the tutorial passes one) and not used:
            the actor's own token is (configured on the actor: ``api_token_file``,
            ``api_token_env`` or ``$REROBOTS_API_TOKEN``); a token is never sent on the bus.
        headers, ignore_env, base_uri, verify: Likewise the actor's settings; not used here.
        bus: A ``bus.client.Client``, or the broker's command endpoint (default:
            ``LINEBUS_ENDPOINT`` or the local default).
        service: The actor's service name; None (as the published constructor leaves it): the
            broker's ``lookup`` names the remote-lab actor, the one whose API is ``base_uri`` if
            given, else the first one up (so the tutorial's ``APIClient(api_token=...)`` finds
            the line's actor whatever its name).
        timeout: Bus deadline of one API call, in seconds.

    Raises:
        Error: with ``service`` None, no remote-lab actor is up on the bus (``unknown_service``,
            ``unavailable``) or the broker cannot be reached (``broker_unreachable``).
    """

    def __init__(
        self,
        api_token: str | None = None,
        headers: dict[str, str] | None = None,
        ignore_env: bool = False,
        base_uri: str | None = None,
        verify: bool = True,
        *,
        bus: Client | str | None = None,
        service: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._bus, self._owned = connect_bus(bus)
        self.timeout = timeout
        if service is None:
            what = "the rerobots API" + (f" at {base_uri}" if base_uri else "")
            try:
                service = str(find_service(self._bus, KIND, base_uri, what)["name"])
            except BusError as exc:
                self.close()
                raise _raise(exc) from exc
        self.service = service

    # ------------------------------------------------------------ plumbing

    def _call(
        self, command: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        if self._closed:
            raise Error("the remote-lab session is closed", "closed")
        try:
            return self._bus.call(
                self.service, command, args or {}, timeout=timeout or self.timeout
            )
        except BusError as exc:
            raise _raise(exc) from exc

    def _follow(
        self,
        command: str,
        args: dict[str, Any],
        timeout: float,
        on_update: Callable[[Any], object] | None,
    ) -> Any:
        """A long command: ``on_update`` gets its progress; Ctrl-C (or an exception) cancels it."""
        if self._closed:
            raise Error("the remote-lab session is closed", "closed")
        try:
            call: Call = self._bus.start(self.service, command, args, timeout=timeout)
        except BusError as exc:
            raise _raise(exc) from exc
        try:
            for update in call.updates():
                if on_update is not None:
                    on_update(update)
            return call.result()
        except BusError as exc:
            raise _raise(exc) from exc
        except BaseException:
            call.cancel()
            with contextlib.suppress(BusError):
                call.result()
            raise

    # ------------------------------------------------------------ deployments

    def get_wtypes(self) -> list[str]:
        """The workspace types."""
        result: list[str] = self._call("get_wtypes")
        return result

    def get_wdeployments(
        self,
        query: str | None = None,
        maxlen: int | None = None,
        types: Sequence[str] | None = None,
        page: int | None = None,
        max_per_page: int | None = None,
    ) -> Any:
        """A list of ``{id, type, region, queuelen}``; ``(list, page_count)`` with ``max_per_page``."""
        args: dict[str, Any] = {
            "query": query,
            "maxlen": maxlen,
            "page": page,
            "max_per_page": max_per_page,
        }
        if types is not None:
            args["types"] = list(types)
        answer = self._call("get_wdeployments", args)
        if max_per_page is not None:
            return answer["deployments"], answer["page_count"]
        return answer["deployments"]

    def get_wdeployment_info(self, wdeployment_id: str) -> dict[str, Any]:
        """Everything the API says of one deployment."""
        result: dict[str, Any] = self._call(
            "get_wdeployment_info", {"wdeployment_id": wdeployment_id}
        )
        return result

    # ------------------------------------------------------------ instances

    def get_instances(
        self,
        include_terminated: bool = False,
        page: int | None = None,
        max_per_page: int | None = None,
    ) -> Any:
        """Your instances' ids; ``(ids, page_count)`` with ``max_per_page``."""
        answer = self._call(
            "get_instances",
            {"include_terminated": include_terminated, "page": page, "max_per_page": max_per_page},
        )
        if max_per_page is not None:
            return answer["instances"], answer["page_count"]
        return answer["instances"]

    def get_instance_info(self, instance_id: str) -> dict[str, Any]:
        """Everything the API says of one instance (``InstanceNotFound`` for an unknown id)."""
        result: dict[str, Any] = self._call("get_instance_info", {"instance_id": instance_id})
        return result

    def request_instance(
        self,
        type_or_wdeployment_id: str,
        sshkey: str | None = None,
        vpn: bool = False,
        reserve: bool = False,
        event_url: str | None = None,
        duration: int | None = None,
    ) -> dict[str, Any]:
        """``{success, id, sshkey?}``: a new instance (the private key when the API issued one)."""
        result: dict[str, Any] = self._call(
            "request_instance",
            {
                "type_or_wdeployment_id": type_or_wdeployment_id,
                "sshkey": sshkey,
                "vpn": vpn,
                "reserve": reserve,
                "event_url": event_url,
                "duration": duration,
                "include_sshkey": True,
            },
        )
        return result

    def terminate_instance(self, instance_id: str) -> None:
        """Terminate an instance (``BusyWorkspaceInstance`` if it cannot be now)."""
        self._call("terminate_instance", {"instance_id": instance_id})

    def get_vpn_newclient(self, instance_id: str) -> dict[str, Any]:
        """``{client_id, ovpn}``: a new OpenVPN client of the instance."""
        result: dict[str, Any] = self._call("get_vpn_newclient", {"instance_id": instance_id})
        return result

    # ------------------------------------------------------------ add-ons

    def activate_addon_cam(self, instance_id: str) -> None:
        """Activate the cam add-on."""
        self._call("activate_addon_cam", {"instance_id": instance_id})

    def status_addon_cam(self, instance_id: str) -> dict[str, Any]:
        """``{"status": "notfound" | "starting" | "active", ...}``."""
        result: dict[str, Any] = self._call("status_addon_cam", {"instance_id": instance_id})
        return result

    def deactivate_addon_cam(self, instance_id: str) -> None:
        """Deactivate the cam add-on."""
        self._call("deactivate_addon_cam", {"instance_id": instance_id})

    def get_snapshot_cam(
        self,
        instance_id: str,
        camera_id: int = 0,
        coding: str | None = None,
        dformat: str | None = None,
    ) -> dict[str, Any]:
        """A camera frame: ``{success, format: "JPEG", coding: None, data: bytes}``.

        ``coding="base64"`` gives ``data`` as base64 text; ``dformat="ndarray"`` a numpy array of
        shape (height, width, 3) (needs numpy and Pillow, as the published client does).
        """
        if dformat is not None:
            dformat = dformat.lower()
            if dformat not in ("ndarray", "jpeg"):
                raise ValueError(f"dformat must be 'ndarray' or 'jpeg', not {dformat!r}")
        if coding not in (None, "base64"):
            raise ValueError(f"coding must be None or 'base64', not {coding!r}")
        if dformat == "ndarray" and coding is not None:
            raise ValueError("dformat='ndarray' needs coding=None")
        answer = self._call(
            "get_snapshot_cam", {"instance_id": instance_id, "camera_id": camera_id}
        )
        data: Any = answer["data"]
        payload: dict[str, Any] = {"success": True, "format": answer["format"], "coding": coding}
        if coding == "base64":
            data = base64.b64encode(data).decode()
        if dformat == "ndarray":
            data = _to_ndarray(data)
            payload["format"] = "ndarray"
        payload["data"] = data
        return payload

    def activate_addon_mistyproxy(self, instance_id: str) -> None:
        """Activate the mistyproxy add-on (new URLs on each activation)."""
        self._call("activate_addon_mistyproxy", {"instance_id": instance_id})

    def status_addon_mistyproxy(self, instance_id: str) -> dict[str, Any]:
        """``{"status", "url": [http, websocket]}`` once active; ``{"status": "notfound"}`` if not."""
        result: dict[str, Any] = self._call("status_addon_mistyproxy", {"instance_id": instance_id})
        return result

    def deactivate_addon_mistyproxy(self, instance_id: str) -> None:
        """Deactivate the mistyproxy add-on."""
        self._call("deactivate_addon_mistyproxy", {"instance_id": instance_id})

    def activate_addon_drive(self, instance_id: str) -> None:
        """Activate the drive add-on."""
        self._call("activate_addon_drive", {"instance_id": instance_id})

    def status_addon_drive(self, instance_id: str) -> dict[str, Any]:
        """The drive add-on's status."""
        result: dict[str, Any] = self._call("status_addon_drive", {"instance_id": instance_id})
        return result

    def deactivate_addon_drive(self, instance_id: str) -> None:
        """Deactivate the drive add-on."""
        self._call("deactivate_addon_drive", {"instance_id": instance_id})

    def send_drive_command(self, instance_id: str, command: dict[str, Any] | None = None) -> None:
        """Send a motion command; None stops (``{"linearv": 0, "angularv": 0}``)."""
        self._call("send_drive_command", {"instance_id": instance_id, "command": command})

    def activate_addon_vnc(self, instance_id: str) -> None:
        """Activate the vnc add-on."""
        self._call("activate_addon_vnc", {"instance_id": instance_id})

    def status_addon_vnc(self, instance_id: str) -> dict[str, Any]:
        """The vnc add-on's status."""
        result: dict[str, Any] = self._call("status_addon_vnc", {"instance_id": instance_id})
        return result

    def start_addon_vnc(self, instance_id: str) -> None:
        """Start the VNC server."""
        self._call("start_addon_vnc", {"instance_id": instance_id})

    def stop_addon_vnc(self, instance_id: str) -> None:
        """Stop the VNC server."""
        self._call("stop_addon_vnc", {"instance_id": instance_id})

    def deactivate_addon_vnc(self, instance_id: str) -> None:
        """Deactivate the vnc add-on."""
        self._call("deactivate_addon_vnc", {"instance_id": instance_id})

    # ------------------------------------------------------------ firewall, reservations

    def get_firewall_rules(self, instance_id: str) -> list[Any]:
        """The instance's firewall rules."""
        result: list[Any] = self._call("get_firewall_rules", {"instance_id": instance_id})
        return result

    def add_firewall_rule(
        self, instance_id: str, action: str, source_address: str | None = None
    ) -> None:
        """Add a rule: ``action`` (ACCEPT, DROP or REJECT) for packets from ``source_address``."""
        if action not in ("ACCEPT", "DROP", "REJECT"):
            raise Error("unrecognized firewall action", "invalid_arguments")
        self._call(
            "add_firewall_rule",
            {"instance_id": instance_id, "action": action, "source_address": source_address},
        )

    def flush_firewall_rules(self, instance_id: str) -> None:
        """Remove every firewall rule of the instance."""
        self._call("flush_firewall_rules", {"instance_id": instance_id})

    def get_reservations(self) -> list[Any]:
        """Your reservations."""
        result: list[Any] = self._call("get_reservations")
        return result

    def cancel_reservation(self, reservation_id: str) -> None:
        """Cancel a reservation."""
        self._call("cancel_reservation", {"reservation_id": reservation_id})


def _to_ndarray(jpeg: bytes) -> Any:
    """Decode a JPEG into a (height, width, 3) uint8 array, as ``rerobots`` does (numpy, Pillow)."""
    # Optional, as in the published client's "extra"; imported by name (no stubs are needed).
    try:
        np = importlib.import_module("numpy")
        image_module = importlib.import_module("PIL.Image")
    except ImportError as exc:
        raise ImportError(
            "dformat='ndarray' needs numpy and Pillow (pip install numpy Pillow)"
        ) from exc
    with image_module.open(io.BytesIO(jpeg)) as image:
        rgb = image.convert("RGB")
        return np.asarray(rgb, dtype=np.uint8).reshape(rgb.height, rgb.width, 3)


class Instance:
    """One workspace instance (``rerobots.Instance``), through an ``APIClient``'s actor.

    Args:
        workspace_types: Use the first deployment of these types (as the published client).
        wdeployment_id: Request an instance of this deployment.
        instance_id: Attach to this existing instance instead of requesting one.
        api_token, headers: As the published signature; the actor's token is used.
        apic: The ``APIClient`` (its bus and service); by default one on ``LINEBUS_ENDPOINT``.

    Raises:
        ValueError: none of the first three given, or the deployment is not of ``workspace_types``.
    """

    def __init__(
        self,
        workspace_types: Sequence[str] | None = None,
        wdeployment_id: str | None = None,
        instance_id: str | None = None,
        api_token: str | None = None,
        headers: dict[str, str] | None = None,
        apic: APIClient | None = None,
    ) -> None:
        if workspace_types is None and wdeployment_id is None and instance_id is None:
            raise ValueError("need workspace_types, wdeployment_id or instance_id")
        self._apic = apic if apic is not None else APIClient(api_token, headers)
        self._ssh_started = False
        if wdeployment_id is not None and workspace_types is not None:
            info = self._apic.get_wdeployment_info(wdeployment_id)
            if info["type"] not in workspace_types:
                raise ValueError("workspace deployment is not of any of the given types")
        if workspace_types is not None:
            candidates = self._apic.get_wdeployments(types=workspace_types)
            if not candidates:
                raise ValueError("no deployments found with any of the given types")
            wdeployment_id = candidates[0]["id"]
        self._wdeployment_id = wdeployment_id
        if instance_id is None:
            assert wdeployment_id is not None
            payload = self._apic._call(
                "request_instance", {"type_or_wdeployment_id": wdeployment_id, "reserve": False}
            )
            self._id: str = payload["id"]
            self._status = "INIT"
            self._details: dict[str, Any] | None = None
        else:
            self._id = instance_id
            info = self._apic.get_instance_info(instance_id)
            if wdeployment_id is not None and info.get("deployment") != wdeployment_id:
                raise ValueError("the instance is not of the given deployment")
            self._wdeployment_id = info.get("deployment")
            self._status = str(info["status"])
            self._details = None

    @property
    def id(self) -> str:
        """The instance's id (the published client's ``_id``)."""
        return self._id

    def _call(
        self, command: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        return self._apic._call(command, {"instance_id": self._id, **(args or {})}, timeout)

    def get_status(self) -> str:
        """``INIT``, ``READY``, ``INIT_FAIL``, ``TERMINATING`` or ``TERMINATED``."""
        self._status = str(self._call("get_status"))
        return self._status

    def get_details(self) -> dict[str, Any]:
        """``{type, region, starttime, status, conn?}`` as the seed's tutorial shows."""
        details: dict[str, Any] = self._call("get_details")
        self._status = str(details.get("status"))
        return details

    def wait_until_ready(
        self, timeout: float = 300.0, on_status: Callable[[str, float], object] | None = None
    ) -> dict[str, Any]:
        """Wait until READY (the actor polls); ``on_status(status, elapsed_s)`` on each change."""

        def feed(update: Any) -> None:
            if on_status is not None and isinstance(update, dict):
                on_status(str(update.get("status")), float(update.get("elapsed_s", 0.0)))

        details: dict[str, Any] = self._apic._follow(
            "wait_until_ready",
            {"instance_id": self._id, "timeout_s": timeout},
            timeout + 10.0,
            feed,
        )
        self._status = "READY"
        return details

    # SSH

    def start_sshclient(self) -> None:
        """Open SSH to the instance (host key checked against the API's); needs READY."""
        self._call("start_sshclient")
        self._ssh_started = True

    def stop_sshclient(self) -> None:
        """Close the SSH connection."""
        self._call("stop_sshclient")
        self._ssh_started = False

    def exec_ssh(
        self,
        command: str,
        timeout: float | None = None,
        get_files: bool = False,
        on_output: Callable[[str, bytes], object] | None = None,
    ) -> Any:
        """Run ``command``; return its stdout (bytes), or with ``get_files`` the published client's
        ``(stdin, stdout, stderr)`` as file objects (stdin None: the command has ended).

        ``on_output(stream, data)`` (linebus extension) gets the output as it comes.
        """
        assert self._ssh_started, "call start_sshclient() first"

        def feed(update: Any) -> None:
            if on_output is not None and isinstance(update, dict):
                on_output(str(update.get("stream")), bytes(update.get("data", b"")))

        bus_timeout = (timeout if timeout is not None else 3600.0) + 10.0
        result = self._apic._follow(
            "exec_ssh",
            {"instance_id": self._id, "command": command, "timeout": timeout},
            bus_timeout,
            feed,
        )
        if get_files:
            return None, io.BytesIO(result["stdout"]), io.BytesIO(result["stderr"])
        stdout: bytes = result["stdout"]
        return stdout

    def put_file(
        self,
        localpath: str | os.PathLike[str],
        remotepath: str,
        progress: Callable[[int, int], object] | None = None,
    ) -> FileAttributes:
        """Copy the local file to ``remotepath`` on the instance; ``progress(done, total)``."""
        assert self._ssh_started, "call start_sshclient() first"
        data = Path(localpath).read_bytes()
        result = self._apic._follow(
            "put_file",
            {"instance_id": self._id, "remotepath": remotepath, "data": data},
            self._apic.timeout + len(data) / 100_000,
            _bytes_feed(progress),
        )
        return FileAttributes(int(result["size"]), str(result["path"]))

    def get_file(
        self,
        remotepath: str,
        localpath: str | os.PathLike[str],
        progress: Callable[[int, int], object] | None = None,
    ) -> None:
        """Copy ``remotepath`` from the instance to the local file; ``progress(done, total)``."""
        assert self._ssh_started, "call start_sshclient() first"
        data: bytes = self._apic._follow(
            "get_file",
            {"instance_id": self._id, "remotepath": remotepath},
            self._apic.timeout * 10,
            _bytes_feed(progress),
        )
        Path(localpath).write_bytes(data)

    def sftp_client(self) -> NoReturn:
        """Not offered over linebus: the published client returns paramiko's ``SFTPClient``, a
        live connection to the instance, which cannot cross the bus (the actor holds the SSH
        connection and its key). ``put_file`` and ``get_file``, the wrappers the seed names for
        it, go through the actor.

        Raises:
            Error: always, code ``unknown_command``.
        """
        raise Error(
            "sftp_client: a paramiko SFTP client cannot be offered over linebus (the remote-lab"
            " actor holds the connection); use put_file and get_file",
            "unknown_command",
        )

    def terminate(self) -> None:
        """Close SSH and terminate the instance."""
        self._call("terminate")
        self._ssh_started = False

    # one-line wrappers of the APIClient, bound to this instance

    def get_wdeployment_info(self) -> dict[str, Any]:
        """The workspace deployment of this instance (``APIClient.get_wdeployment_info``)."""
        if self._wdeployment_id is None:
            raise Error("the instance's workspace deployment is not known", "device_fault")
        return self._apic.get_wdeployment_info(self._wdeployment_id)

    def get_vpn_newclient(self) -> dict[str, Any]:
        """A new OpenVPN client: ``{client_id, ovpn}``."""
        return self._apic.get_vpn_newclient(self._id)

    def activate_addon_cam(self) -> None:
        """Activate the cam add-on."""
        self._apic.activate_addon_cam(self._id)

    def status_addon_cam(self) -> dict[str, Any]:
        """The cam add-on's status."""
        return self._apic.status_addon_cam(self._id)

    def deactivate_addon_cam(self) -> None:
        """Deactivate the cam add-on."""
        self._apic.deactivate_addon_cam(self._id)

    def get_snapshot_cam(
        self, camera_id: int = 0, coding: str | None = None, dformat: str | None = None
    ) -> dict[str, Any]:
        """A camera frame (see ``APIClient.get_snapshot_cam``)."""
        return self._apic.get_snapshot_cam(self._id, camera_id, coding, dformat)

    def activate_addon_mistyproxy(self) -> None:
        """Activate the mistyproxy add-on."""
        self._apic.activate_addon_mistyproxy(self._id)

    def status_addon_mistyproxy(self) -> dict[str, Any]:
        """The mistyproxy add-on's status and URLs."""
        return self._apic.status_addon_mistyproxy(self._id)

    def deactivate_addon_mistyproxy(self) -> None:
        """Deactivate the mistyproxy add-on."""
        self._apic.deactivate_addon_mistyproxy(self._id)

    def activate_addon_drive(self) -> None:
        """Activate the drive add-on."""
        self._apic.activate_addon_drive(self._id)

    def status_addon_drive(self) -> dict[str, Any]:
        """The drive add-on's status."""
        return self._apic.status_addon_drive(self._id)

    def deactivate_addon_drive(self) -> None:
        """Deactivate the drive add-on."""
        self._apic.deactivate_addon_drive(self._id)

    def send_drive_command(self, command: dict[str, Any] | None = None) -> None:
        """Send a motion command through the drive add-on; None stops."""
        self._apic.send_drive_command(self._id, command)

    def activate_addon_vnc(self) -> None:
        """Activate the vnc add-on."""
        self._apic.activate_addon_vnc(self._id)

    def status_addon_vnc(self) -> dict[str, Any]:
        """The vnc add-on's status."""
        return self._apic.status_addon_vnc(self._id)

    def start_addon_vnc(self) -> None:
        """Start the VNC server."""
        self._apic.start_addon_vnc(self._id)

    def stop_addon_vnc(self) -> None:
        """Stop the VNC server."""
        self._apic.stop_addon_vnc(self._id)

    def deactivate_addon_vnc(self) -> None:
        """Deactivate the vnc add-on."""
        self._apic.deactivate_addon_vnc(self._id)

    def get_firewall_rules(self) -> list[Any]:
        """The instance's firewall rules."""
        return self._apic.get_firewall_rules(self._id)

    def add_firewall_rule(self, action: str, source_address: str | None = None) -> None:
        """Add a firewall rule (ACCEPT, DROP or REJECT)."""
        self._apic.add_firewall_rule(self._id, action, source_address)

    def flush_firewall_rules(self) -> None:
        """Remove every firewall rule."""
        self._apic.flush_firewall_rules(self._id)


def _bytes_feed(progress: Callable[[int, int], object] | None) -> Callable[[Any], None]:
    def feed(update: Any) -> None:
        if progress is not None and isinstance(update, dict) and "done" in update:
            progress(int(update["done"]), int(update["total"]))

    return feed
