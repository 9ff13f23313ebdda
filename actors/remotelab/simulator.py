"""A simulated rerobots remote-lab service: the HTTP API on loopback and one SSH server per instance.

Run it as ``python -m actors.remotelab.simulator --listen 127.0.0.1:PORT --token-file PATH
[--ssh-host 127.0.0.1] [--state-dir DIR] [--ready-delay-s S] [--fault KIND[:k=v,...]]``; once
listening it prints one JSON line ``{"event": "ready", "base_uri": ..., "token_file": ...,
"deployments": [...]}`` on stdout and serves until SIGTERM/SIGINT. The token file is created 0600
with a random token if missing; the token itself is never printed. Tests may also run it in-process:
``with RemoteLabSimulator(token=...) as sim: sim.base_uri``.

What it reproduces is what the published client (PyPI ``rerobots`` 0.11.0) depends on, as
reference/rerobots-client.md lists it (§7 is the checklist):

- ``Authorization: Bearer <its token>`` on every request; anything else (another token or none)
  gets 400 ``{"error_message": "wrong authorization token"}``, the real API's answer.
- Deployments (``/workspaces``, ``/deployments`` with ``q``, ``types`` (comma list, ``!`` negates),
  ``maxlen`` (int or ``u``), ``max_per_page``/``page`` and ``page_count``, ``info`` for every id;
  ``/deployment/{id}``). A deployment holds one instance at a time: while it does, its
  ``queuelen`` is 1 and ``POST /new`` on it (or on its type, when no other is free) is answered
  503 ``{"result_message": "All matching workspace deployments are busy. ..."}``; with
  ``reserve: true`` the answer is instead ``{"success": false, "id": <reservation id>}``.
- Instances: ``POST /new/{wd|type}`` reads the JSON body whatever its Content-Type (``sshkey``,
  ``vpn``, ``reserve``, ``expire_d``, ``eurl`` are recorded); without ``sshkey`` it answers a new
  RSA private key in PKCS#1 PEM. ``GET /instance/{id}`` always has ``id``, ``deployment``,
  ``type``, ``region``, ``starttime``, ``status``; ``INIT`` turns ``READY`` ``ready_delay_s``
  after creation, and from then on ``fwd: {ipv4, port}`` (an int, never 22) and ``hostkeys``
  (the SSH server's real key first) are there. ``/instances`` keeps blank query values
  (``include_terminated=``) and sends ``page_count``; newest first. ``POST /terminate/{id}``
  ends the instance (``TERMINATED``, ``endtime``), closes its SSH server and frees the deployment.
  Unknown instance: 404 ``{"error_message": "instance not found"}``.
- Add-ons ``cam``, ``mistyproxy``, ``drive``, ``vnc`` where the deployment supports them, on READY
  instances: POST activates (``starting``, then ``active`` after ``addon_delay_s``), GET is the
  status or 404 when inactive, DELETE deactivates (404 when inactive). A second mistyproxy
  activation is 503 (as rmock); cam activation is idempotent. mistyproxy's ``url`` pair is new on
  each activation. ``GET /addon/cam/{id}/{cam}/img`` is ``{success, format: "JPEG", coding:
  "base64", data}``, a real baseline RGB JPEG (actors.simsupport.jpeg), or 404 while the add-on is not active.
- ``POST /vpn/{id}`` (instances requested with ``vpn: true``): a new ``{client_id, ovpn}`` each
  time; ``GET /vpn/{id}`` its status. Also ``/firewall/{id}``, ``/reservations``,
  ``/instance/{id}/sshkey``, ``/rules``.
- A trailing-slash ``base_uri`` (``//deployments``) works: repeated slashes are collapsed.
- With ``--state-dir``, instances outlive the simulator: ``simulator.json`` (0600) keeps them with
  their keys, and a new run serves them again (SSH on the same port when it is free; sandboxes
  are ``instances/<id>/`` there). Without it, everything is in memory and a temporary directory.

**Assumptions** (the real service's behaviour is not public here): the status codes (400 wrong
token, 404 unknown ids, 503 busy) follow the published client's own test fixtures; a wrong token
is refused on every endpoint (the real API may let anonymous users list public deployments);
``/terminate`` of a terminated instance succeeds again; ``expire_d`` is a lifetime in seconds from
the request (the instance then ends as if terminated); VPN needs ``vpn: true`` at creation.

Faults (``Fault``; from ``--fault`` flags, the constructor, ``add_fault()`` or ``POST
/_sim/faults`` with the same fields as JSON): ``wrong_token`` (the next requests are refused as
if the token were wrong), ``http_5xx`` (an HTML body with ``status``, 502 by default),
``slow`` (answers ``delay_s`` late), ``busy_deployments`` (``/new`` answers busy),
``busy_instance`` (``/terminate`` answers "This instance is busy."), ``init_fail`` (the next
instance goes ``INIT_FAIL``), ``ssh_drop`` (an SFTP transfer's connection is cut after
``after_bytes``; its path is ``/instance/{id}``). Each fires ``count`` times (-1: until cleared)
on requests whose path contains ``path``. Test endpoints (same token; never faulted):
``GET /_sim/state``, ``POST|DELETE /_sim/faults``, ``POST /_sim/instance/{id}/ssh/drop`` (cut
its SSH connections now) and ``POST /_sim/instance/{id}/status`` (``{"status": "READY"|
"INIT_FAIL"}``, to skip the delay).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import io
import json
import math
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import paramiko
import structlog

from actors.remotelab.sim_ssh import SandboxSSHServer, host_key_line, public_key_from_line
from actors.simsupport.jpeg import camera_frame
from bus.options import secret_from_file
from bus.security.files import write_private_file

__all__ = [
    "BUSY_DEPLOYMENTS_MESSAGE",
    "BUSY_INSTANCE_MESSAGE",
    "DEFAULT_DEPLOYMENTS",
    "FAULT_KINDS",
    "WRONG_TOKEN_MESSAGE",
    "ApiError",
    "Deployment",
    "Fault",
    "RemoteLabSimulator",
    "main",
]

log = structlog.get_logger()

WRONG_TOKEN_MESSAGE = "wrong authorization token"
BUSY_DEPLOYMENTS_MESSAGE = "All matching workspace deployments are busy. Try again later."
BUSY_INSTANCE_MESSAGE = "This instance is busy. Try again later."
FAULT_KINDS = (
    "wrong_token",
    "http_5xx",
    "slow",
    "busy_deployments",
    "busy_instance",
    "init_fail",
    "ssh_drop",
)
ADDONS = ("cam", "mistyproxy", "drive", "vnc")
MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Deployment:
    """A workspace deployment the simulator offers (one instance at a time)."""

    id: str
    type: str
    region: str = "us:cali"
    supported_addons: tuple[str, ...] = ("cam", "mistyproxy", "drive")
    desc: str = ""
    cameras: int = 1
    created: str = "2019-07-28 23:26:16.983048"


DEFAULT_DEPLOYMENTS = (
    Deployment("2c0873b5-1da1-46e6-9658-c40379774edf", "fixed_misty2", desc="Misty II, fixed"),
    Deployment(
        "3a65acd4-4aef-4ffc-b7f9-d50e48fc5541", "basic_misty2fieldtrial", desc="Misty II arena"
    ),
    Deployment(
        "f06c8740-fb20-4d2f-a3b4-9d5e3c2a0c51",
        "null",
        region="us:ny",
        supported_addons=("cam", "vnc"),
        desc="empty workspace with a camera",
        cameras=2,
    ),
)


@dataclass(slots=True)
class Fault:
    """One injected fault (see the module docstring for the kinds).

    Args:
        kind: One of ``FAULT_KINDS``.
        count: How many times it fires; -1 until cleared.
        path: Applies to requests whose path contains this ("" = all).
        delay_s: ``slow``: how late the answer comes.
        status: ``http_5xx``: the status code.
        after_bytes: ``ssh_drop``: bytes moved before the cut.
    """

    kind: str
    count: int = -1
    path: str = ""
    delay_s: float = 2.0
    status: int = 502
    after_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        if not 500 <= self.status <= 599:
            raise ValueError("http_5xx status must be 500..599")

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """``KIND`` or ``KIND:key=value,...`` (``slow:delay_s=3,count=2``)."""
        kind, _, rest = spec.partition(":")
        values: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(cls)}
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep or key not in types or key == "kind":
                raise ValueError(f"fault {spec!r}: expected key=value with a key of {list(types)}")
            values[key] = _coerce(str(types[key]), value)
        return cls(kind.strip(), **values)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Fault:
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(body) - set(known)
        if unknown or "kind" not in body:
            raise ValueError(f"fault needs 'kind' and only keys of {list(known)}")
        values = {key: _coerce(str(known[key]), value) for key, value in body.items()}
        return cls(**values)


def _coerce(type_name: str, value: Any) -> Any:
    converters: dict[str, Callable[[Any], Any]] = {"int": int, "float": float, "str": str}
    return converters[type_name](value)


@dataclass(slots=True)
class _Addon:
    since: float
    urls: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Instance:
    id: str
    deployment: Deployment
    created: float
    starttime: str
    request: dict[str, Any]
    private_key: str | None
    ssh: SandboxSSHServer
    host_keys: list[str]
    created_wall: float = 0.0
    status: str = "INIT"
    endtime: str | None = None
    addons: dict[str, _Addon] = field(default_factory=dict)
    vpn_clients: list[str] = field(default_factory=list)
    firewall: list[dict[str, str]] = field(default_factory=list)
    drive_commands: list[Any] = field(default_factory=list)


class ApiError(Exception):
    """A non-2xx answer of the simulated API: ``status`` and the JSON ``body``.

    Handlers raise it; so do the in-process controls (``set_status``, ``drop_ssh``) for an
    unknown instance (404).
    """

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, body)
        self.status, self.body = status, body


def _not_found(what: str = "instance not found") -> ApiError:
    return ApiError(404, {"error_message": what})


def _now_text() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class RemoteLabSimulator:
    """The rerobots API on a ``ThreadingHTTPServer``; ``start()`` serves from a thread.

    Args:
        token: The only API token accepted.
        host: Address of the HTTP API.
        port: Its port (0 = any free port).
        ssh_host: Address of the instances' SSH servers (published as ``fwd.ipv4``).
        state_dir: Where instance sandboxes go (``instances/<id>/``), and the simulator's own
            state (``simulator.json``, 0600: instances with their keys, reservations), which
            ``start()`` loads, so instances outlive a restart of the simulator; default a
            temporary directory removed by ``stop()``, and no state file.
        deployments: The deployments offered.
        ready_delay_s: Time from ``INIT`` to ``READY``.
        addon_delay_s: Time from ``starting`` to ``active``.
        faults: Faults armed from the start.
    """

    def __init__(
        self,
        *,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        ssh_host: str = "127.0.0.1",
        state_dir: str | Path | None = None,
        deployments: Sequence[Deployment] = DEFAULT_DEPLOYMENTS,
        ready_delay_s: float = 1.0,
        addon_delay_s: float = 0.5,
        faults: Iterable[Fault] = (),
    ) -> None:
        if not token:
            raise ValueError("the simulator needs a non-empty token")
        self.token = token
        self.ssh_host = ssh_host
        self.ready_delay_s = ready_delay_s
        self.addon_delay_s = addon_delay_s
        self.deployments = {d.id: d for d in deployments}
        self._own_state_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="rlsim-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file = None if self._own_state_dir else self.state_dir / "simulator.json"
        self._lock = threading.RLock()
        self._faults: list[Fault] = list(faults)
        self._instances: dict[str, _Instance] = {}
        self._icounter = dict.fromkeys(self.deployments, 0)
        self._reservations: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def base_uri(self) -> str:
        """What ``APIClient(base_uri=...)`` takes."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        """Load the state file (if any) and serve from a background thread."""
        self._load()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="rlsim-http", daemon=True
        )  # a short poll interval: stop() returns at once
        self._thread.start()

    def stop(self) -> None:
        """Stop serving; close every SSH server; remove a temporary state directory."""
        self.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(10)
        self._httpd.server_close()
        with self._lock:
            instances = list(self._instances.values())
        for instance in instances:
            instance.ssh.stop()
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ test controls

    def add_fault(self, fault: Fault) -> None:
        """Arm a fault (after the ones already armed)."""
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._faults.clear()

    def take_fault(self, kind: str, path: str = "") -> Fault | None:
        """Consume one firing of the first armed fault of ``kind`` that applies to ``path``."""
        with self._lock:
            for fault in self._faults:
                if fault.kind == kind and fault.path in path:
                    if fault.count > 0:
                        fault.count -= 1
                        if fault.count == 0:
                            self._faults.remove(fault)
                    return fault
            return None

    def set_status(self, instance_id: str, status: str) -> None:
        """Force an instance to ``READY`` or ``INIT_FAIL`` now."""
        if status not in ("READY", "INIT_FAIL"):
            raise ValueError("status must be READY or INIT_FAIL")
        with self._lock:
            instance = self._instance(instance_id)
            if self._status(instance) != "INIT":
                raise ApiError(409, {"error_message": f"instance is {self._status(instance)}"})
            instance.status = status
            if status == "INIT_FAIL":
                self._release(instance)
            self._save()

    def drop_ssh(self, instance_id: str) -> int:
        """Cut the SSH connections of an instance now; how many were cut."""
        with self._lock:
            instance = self._instance(instance_id)
        return instance.ssh.drop_connections()

    def state(self) -> dict[str, Any]:
        """What tests inspect: instances (with their requests and sandboxes), faults, requests."""
        with self._lock:
            return {
                "instances": {
                    iid: {
                        "status": self._status(inst),
                        "deployment": inst.deployment.id,
                        "request": inst.request,
                        "sandbox": str(inst.ssh.sandbox),
                        "ssh_port": inst.ssh.port,
                        "ssh_connections": inst.ssh.connections,
                        "ssh_drops": inst.ssh.drops,
                        "addons": {name: self._addon_status(inst, name) for name in inst.addons},
                        "vpn_clients": list(inst.vpn_clients),
                        "drive_commands": list(inst.drive_commands),
                    }
                    for iid, inst in self._instances.items()
                },
                "faults": [asdict(f) for f in self._faults],
                "reservations": list(self._reservations),
                "requests": self.requests[-200:],
            }

    # ------------------------------------------------------------ state helpers

    def _instance(self, instance_id: str) -> _Instance:
        instance = self._instances.get(instance_id)
        if instance is None:
            raise _not_found()
        return instance

    def _status(self, instance: _Instance) -> str:
        age = time.monotonic() - instance.created
        if instance.status == "INIT" and age >= self.ready_delay_s:
            instance.status = "READY"
        lifetime = instance.request.get("expire_d")
        if (
            instance.status in ("INIT", "READY")
            and isinstance(lifetime, int | float)
            and not isinstance(lifetime, bool)
            and 0 < lifetime <= age
        ):
            instance.status = "TERMINATED"
            instance.endtime = _now_text()
            self._release(instance)
            log.info("rlsim_instance_expired", instance=instance.id)
            self._save()
        return instance.status

    def _ready(self, instance_id: str) -> _Instance:
        instance = self._instance(instance_id)
        status = self._status(instance)
        if status != "READY":
            raise ApiError(400, {"error_message": f"instance is not ready (status {status})"})
        return instance

    def _busy(self, deployment: Deployment) -> bool:
        return any(
            inst.deployment.id == deployment.id and self._status(inst) in ("INIT", "READY")
            for inst in self._instances.values()
        )

    def _release(self, instance: _Instance) -> None:
        instance.addons.clear()
        threading.Thread(target=instance.ssh.stop, name="rlsim-ssh-stop", daemon=True).start()

    def _ssh_server(
        self, instance_id: str, host_key: paramiko.PKey, authorized: paramiko.PKey, port: int = 0
    ) -> SandboxSSHServer:
        return SandboxSSHServer(
            sandbox=self.state_dir / "instances" / instance_id,
            host_key=host_key,
            authorized_key=authorized,
            host=self.ssh_host,
            port=port,
            name=instance_id,
            drop_budget=lambda: self._drop_budget(instance_id),
        )

    def _save(self) -> None:
        """Write the state file (called with the lock held, after every change)."""
        if self.state_file is None:
            return
        instances = []
        for inst in self._instances.values():
            host_key = io.StringIO()
            inst.ssh.host_key.write_private_key(host_key)
            instances.append(
                {
                    "id": inst.id,
                    "deployment": inst.deployment.id,
                    "created_wall": inst.created_wall,
                    "starttime": inst.starttime,
                    "status": inst.status,
                    "endtime": inst.endtime,
                    "request": inst.request,
                    "private_key": inst.private_key,
                    "authorized_key": host_key_line(inst.ssh.authorized_key, "rlsim"),
                    "host_key": host_key.getvalue(),
                    "host_keys": inst.host_keys,
                    "ssh_port": inst.ssh.port,
                    "vpn_clients": inst.vpn_clients,
                    "firewall": inst.firewall,
                }
            )
        document = {
            "version": 1,
            "icounter": self._icounter,
            "reservations": self._reservations,
            "instances": instances,
        }
        write_private_file(self.state_file, json.dumps(document).encode(), overwrite=True)

    def _load(self) -> None:
        """Take the state file's instances back (their SSH servers on their old ports if free)."""
        if self.state_file is None or not self.state_file.exists():
            return
        document = json.loads(self.state_file.read_bytes())
        with self._lock:
            for wd, count in document.get("icounter", {}).items():
                if wd in self._icounter:
                    self._icounter[wd] = int(count)
            self._reservations = list(document.get("reservations", []))
            for saved in document.get("instances", []):
                deployment = self.deployments.get(saved["deployment"])
                if deployment is None:
                    continue  # a deployment this run does not offer
                host_key = paramiko.ECDSAKey.from_private_key(io.StringIO(saved["host_key"]))
                authorized = public_key_from_line(saved["authorized_key"])
                ssh = self._ssh_server(saved["id"], host_key, authorized, saved["ssh_port"])
                age = max(0.0, time.time() - float(saved["created_wall"]))
                instance = _Instance(
                    id=saved["id"],
                    deployment=deployment,
                    created=time.monotonic() - age,
                    created_wall=float(saved["created_wall"]),
                    starttime=saved["starttime"],
                    request=dict(saved["request"]),
                    private_key=saved["private_key"],
                    ssh=ssh,
                    host_keys=list(saved["host_keys"]),
                    status=saved["status"],
                    endtime=saved["endtime"],
                    vpn_clients=list(saved["vpn_clients"]),
                    firewall=list(saved["firewall"]),
                )
                self._instances[instance.id] = instance
                if self._status(instance) in ("INIT", "READY"):
                    ssh.start()
        log.info("rlsim_state_loaded", instances=len(self._instances))

    def _drop_budget(self, instance_id: str) -> int | None:
        fault = self.take_fault("ssh_drop", f"/instance/{instance_id}")
        return None if fault is None else fault.after_bytes

    def _deployment_info(self, deployment: Deployment) -> dict[str, Any]:
        return {
            "id": deployment.id,
            "type": deployment.type,
            "type_version": 1,
            "supported_addons": list(deployment.supported_addons),
            "desc": deployment.desc,
            "region": deployment.region,
            "icounter": self._icounter[deployment.id],
            "created": deployment.created,
            "queuelen": 1 if self._busy(deployment) else 0,
            "online": True,
        }

    def _addon_status(self, instance: _Instance, name: str) -> str:
        addon = instance.addons[name]
        return "active" if time.monotonic() - addon.since >= self.addon_delay_s else "starting"

    # ------------------------------------------------------------ API: deployments

    def get_workspaces(self, request: _Request) -> dict[str, Any]:
        return {"workspace_types": sorted({d.type for d in self.deployments.values()})}

    def get_deployments(self, request: _Request) -> dict[str, Any]:
        query = request.arg("q", "").lower()
        types = [t for t in request.arg("types", "").split(",") if t]
        wanted = {t for t in types if not t.startswith("!")}
        unwanted = {t[1:] for t in types if t.startswith("!")}
        maxlen_text = request.arg("maxlen", "u")
        try:
            maxlen = None if maxlen_text in ("", "u") else int(maxlen_text)
        except ValueError:
            raise ApiError(400, {"error_message": "maxlen must be an integer or u"}) from None
        with self._lock:
            infos = [self._deployment_info(d) for d in self.deployments.values()]
        chosen = [
            info
            for info in sorted(infos, key=lambda i: (i["type"], i["id"]))
            if (not wanted or info["type"] in wanted)
            and info["type"] not in unwanted
            and (maxlen is None or info["queuelen"] <= maxlen)
            and (
                not query
                or any(query in str(info[key]).lower() for key in ("id", "type", "desc", "region"))
            )
        ]
        page, page_count = _page(chosen, request)
        answer: dict[str, Any] = {
            "workspace_deployments": [info["id"] for info in page],
            "page_count": page_count,
        }
        if request.arg("info", ""):
            answer["info"] = {info["id"]: info for info in page}
        return answer

    def get_deployment(self, request: _Request) -> dict[str, Any]:
        deployment = self.deployments.get(request.params["wd"])
        if deployment is None:
            raise _not_found("no workspace deployment with that id")
        with self._lock:
            return self._deployment_info(deployment)

    def get_rules(self, request: _Request) -> dict[str, Any]:
        wd = request.params.get("wd")
        if wd is not None and wd not in self.deployments:
            raise _not_found("no workspace deployment with that id")
        return {"rules": []}

    # ------------------------------------------------------------ API: instances

    def get_instances(self, request: _Request) -> dict[str, Any]:
        include_terminated = "include_terminated" in request.query
        with self._lock:
            chosen = [
                inst
                for inst in sorted(self._instances.values(), key=lambda i: -i.created)
                if include_terminated or self._status(inst) not in ("TERMINATED", "INIT_FAIL")
            ]
        page, page_count = _page(chosen, request)
        return {"workspace_instances": [inst.id for inst in page], "page_count": page_count}

    def get_instance(self, request: _Request) -> dict[str, Any]:
        with self._lock:
            instance = self._instance(request.params["iid"])
            status = self._status(instance)
            answer: dict[str, Any] = {
                "id": instance.id,
                "deployment": instance.deployment.id,
                "type": instance.deployment.type,
                "region": instance.deployment.region,
                "starttime": instance.starttime,
                "status": status,
                "rootuser": "root",
            }
            if status == "READY":
                answer["fwd"] = {"ipv4": self.ssh_host, "port": instance.ssh.port}
                answer["hostkeys"] = list(instance.host_keys)
            if instance.request.get("vpn"):
                answer["vpn"] = "ready" if status == "READY" else "preparing"
            if instance.endtime is not None:
                answer["endtime"] = instance.endtime
            return answer

    def get_sshkey(self, request: _Request) -> dict[str, Any]:
        with self._lock:
            instance = self._instance(request.params["iid"])
        if instance.private_key is None:
            raise _not_found("no key was generated for this instance")
        return {"key": instance.private_key}

    def new_instance(self, request: _Request) -> dict[str, Any]:
        target = request.params["target"]
        try:
            body = json.loads(request.body or b"{}")  # no Content-Type from the client
        except ValueError:
            raise ApiError(400, {"result_message": "request body is not JSON"}) from None
        if not isinstance(body, dict):
            raise ApiError(400, {"result_message": "request body must be a JSON object"})
        sshkey = body.get("sshkey")
        authorized: paramiko.PKey | None = None
        if sshkey is not None:
            try:
                authorized = public_key_from_line(str(sshkey))
            except ValueError as exc:
                raise ApiError(400, {"result_message": f"bad sshkey: {exc}"}) from None
        candidates = [d for d in self.deployments.values() if target in (d.id, d.type)]
        if not candidates:
            raise ApiError(
                404, {"result_message": f"no workspace deployment or type matches {target}"}
            )
        with self._lock:
            free = [d for d in candidates if not self._busy(d)]
            if not free or self.take_fault("busy_deployments", request.path) is not None:
                if body.get("reserve"):
                    reservation = {"id": str(uuid.uuid4()), "created": _now_text(), "desc": target}
                    self._reservations.append(reservation)
                    self._save()
                    return {"success": False, "id": reservation["id"]}
                raise ApiError(503, {"result_message": BUSY_DEPLOYMENTS_MESSAGE})
            deployment = free[0]
            instance_id = str(uuid.uuid4())
            private_key: str | None = None
            if authorized is None:
                generated = paramiko.RSAKey.generate(2048)
                text = io.StringIO()
                generated.write_private_key(text)  # PKCS#1 "BEGIN RSA PRIVATE KEY"
                private_key, authorized = text.getvalue(), generated
            host_key = paramiko.ECDSAKey.generate()
            ssh = self._ssh_server(instance_id, host_key, authorized)
            ssh.start()
            instance = _Instance(
                id=instance_id,
                deployment=deployment,
                created=time.monotonic(),
                created_wall=time.time(),
                starttime=_now_text(),
                request={
                    key: body[key]
                    for key in ("vpn", "reserve", "expire_d", "eurl", "sshkey")
                    if key in body
                },
                private_key=private_key,
                ssh=ssh,
                host_keys=[host_key_line(host_key, f"root@rlsim-{instance_id[:8]}")],
            )
            if self.take_fault("init_fail", request.path) is not None:
                instance.status = "INIT_FAIL"
                self._release(instance)
            self._instances[instance_id] = instance
            self._icounter[deployment.id] += 1
            self._save()
        log.info("rlsim_instance_new", instance=instance_id, deployment=deployment.id)
        answer: dict[str, Any] = {"success": True, "id": instance_id}
        if private_key is not None:
            answer["sshkey"] = private_key
        return answer

    def terminate(self, request: _Request) -> dict[str, Any]:
        with self._lock:
            instance = self._instance(request.params["iid"])
            if self.take_fault("busy_instance", request.path) is not None:
                raise ApiError(503, {"result_message": BUSY_INSTANCE_MESSAGE})
            if self._status(instance) != "TERMINATED":
                instance.status = "TERMINATED"
                instance.endtime = _now_text()
                self._release(instance)
                self._save()
                log.info("rlsim_instance_terminated", instance=instance.id)
        return {"success": True}

    # ------------------------------------------------------------ API: vpn, firewall, reservations

    def new_vpn_client(self, request: _Request) -> dict[str, Any]:
        with self._lock:
            instance = self._ready(request.params["iid"])
            if not instance.request.get("vpn"):
                raise ApiError(400, {"error_message": "this instance was not requested with vpn"})
            client_id = str(uuid.uuid4())
            instance.vpn_clients.append(client_id)
            self._save()
        return {"client_id": client_id, "ovpn": _ovpn(self.ssh_host, instance.id, client_id)}

    def vpn_status(self, request: _Request) -> dict[str, Any]:
        with self._lock:
            instance = self._instance(request.params["iid"])
            if not instance.request.get("vpn"):
                return {"status": "nil"}
            return {"status": "ready" if self._status(instance) == "READY" else "preparing"}

    def get_firewall(self, request: _Request) -> dict[str, Any]:
        with self._lock:
            return {"rules": list(self._instance(request.params["iid"]).firewall)}

    def add_firewall(self, request: _Request) -> dict[str, Any]:
        body = request.json()
        action = body.get("action")
        if action not in ("ACCEPT", "DROP", "REJECT"):
            raise ApiError(400, {"error_message": "action must be ACCEPT, DROP or REJECT"})
        rule = {"action": str(action), "source": str(body.get("src", "0.0.0.0/0"))}
        with self._lock:
            self._ready(request.params["iid"]).firewall.append(rule)
            self._save()
        return {}

    def flush_firewall(self, request: _Request) -> dict[str, Any]:
        with self._lock:
            self._instance(request.params["iid"]).firewall.clear()
            self._save()
        return {}

    def get_reservations(self, request: _Request) -> dict[str, Any]:
        with self._lock:
            return {"reservations": list(self._reservations)}

    def cancel_reservation(self, request: _Request) -> dict[str, Any]:
        with self._lock:
            before = len(self._reservations)
            self._reservations = [r for r in self._reservations if r["id"] != request.params["rid"]]
            if len(self._reservations) == before:
                raise _not_found("reservation not found")
            self._save()
        return {}

    # ------------------------------------------------------------ API: add-ons

    def activate_addon(self, request: _Request) -> dict[str, Any]:
        name = request.params["addon"]
        with self._lock:
            instance = self._ready(request.params["iid"])
            if name not in instance.deployment.supported_addons:
                raise ApiError(400, {"error_message": f"add-on `{name}` is not supported here"})
            if name in instance.addons:
                if name == "cam":
                    return {}
                raise ApiError(
                    503, {"error_message": f"add-on `{name}` already applied to this instance"}
                )
            addon = _Addon(since=time.monotonic())
            if name == "mistyproxy":
                secret = uuid.uuid4().hex
                host = self._httpd.server_address[0]
                addon.urls = [
                    f"{host!s}:{9000 + len(self._instances) % 1000}/{secret}",
                    f"https://proxy.rlsim.invalid/mistyproxy/{instance.id}/{secret}",
                ]
            instance.addons[name] = addon
        return {}

    def addon_status(self, request: _Request) -> dict[str, Any]:
        name = request.params["addon"]
        with self._lock:
            instance = self._instance(request.params["iid"])
            if name not in instance.addons:
                raise _not_found(f"add-on `{name}` is not active on this instance")
            answer: dict[str, Any] = {"status": self._addon_status(instance, name)}
            if name == "mistyproxy":
                answer["url"] = list(instance.addons[name].urls)
            return answer

    def deactivate_addon(self, request: _Request) -> dict[str, Any]:
        name = request.params["addon"]
        with self._lock:
            instance = self._instance(request.params["iid"])
            if instance.addons.pop(name, None) is None:
                raise _not_found(f"add-on `{name}` is not active on this instance")
        return {}

    def _active(self, instance_id: str, name: str) -> _Instance:
        with self._lock:
            instance = self._instance(instance_id)
            if name not in instance.addons or self._addon_status(instance, name) != "active":
                raise _not_found(f"add-on `{name}` is not active on this instance")
            return instance

    def cam_image(self, request: _Request) -> dict[str, Any]:
        instance = self._active(request.params["iid"], "cam")
        camera = int(request.params["camera"])
        if camera >= instance.deployment.cameras:
            raise _not_found(f"no camera {camera}")
        data = camera_frame(camera, time.time())
        return {
            "success": True,
            "format": "JPEG",
            "coding": "base64",
            "data": base64.b64encode(data).decode(),
        }

    def drive_tx(self, request: _Request) -> dict[str, Any]:
        instance = self._active(request.params["iid"], "drive")
        command = request.json()
        with self._lock:
            instance.drive_commands.append(command)
        return {}

    def vnc_action(self, request: _Request) -> dict[str, Any]:
        self._active(request.params["iid"], "vnc")
        return {}

    # ------------------------------------------------------------ test endpoints

    def sim_state(self, request: _Request) -> dict[str, Any]:
        return self.state()

    def sim_add_fault(self, request: _Request) -> dict[str, Any]:
        try:
            fault = Fault.from_json(request.json())
        except (ValueError, TypeError, KeyError) as exc:
            raise ApiError(400, {"error_message": str(exc)}) from None
        self.add_fault(fault)
        return {"ok": True}

    def sim_clear_faults(self, request: _Request) -> dict[str, Any]:
        self.clear_faults()
        return {"ok": True}

    def sim_drop_ssh(self, request: _Request) -> dict[str, Any]:
        return {"dropped": self.drop_ssh(request.params["iid"])}

    def sim_set_status(self, request: _Request) -> dict[str, Any]:
        try:
            self.set_status(request.params["iid"], str(request.json().get("status")))
        except ValueError as exc:
            raise ApiError(400, {"error_message": str(exc)}) from None
        return {"ok": True}


def _page(items: list[Any], request: _Request) -> tuple[list[Any], int]:
    """Paging as the API documents it: 0 per page = all; a page past the last is the last."""
    try:
        per_page = int(request.arg("max_per_page", "0") or 0)
        page = int(request.arg("page", "1") or 1)
    except ValueError:
        raise ApiError(400, {"error_message": "max_per_page and page must be integers"}) from None
    if per_page <= 0:
        return items, 1
    page_count = max(1, math.ceil(len(items) / per_page))
    page = min(max(page, 1), page_count)
    return items[(page - 1) * per_page : page * per_page], page_count


def _ovpn(host: str, instance_id: str, client_id: str) -> str:
    key = base64.encodebytes(uuid.uuid4().bytes + uuid.uuid4().bytes).decode().strip()
    return (
        "client\ndev tun\nproto udp\n"
        f"remote {host} 1194\nresolv-retry infinite\nnobind\npersist-key\npersist-tun\n"
        "remote-cert-tls server\ncipher AES-256-GCM\nverb 3\n"
        f"# rlsim instance {instance_id} client {client_id}\n"
        f"<tls-crypt>\n-----BEGIN OpenVPN Static key V1-----\n{key}\n"
        "-----END OpenVPN Static key V1-----\n</tls-crypt>\n"
    )


class _Request:
    """What a route handler sees: path parameters, query (blank values kept) and body."""

    def __init__(
        self, path: str, params: dict[str, str], query: dict[str, list[str]], body: bytes
    ) -> None:
        self.path, self.params, self.query, self.body = path, params, query, body

    def arg(self, name: str, default: str) -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            raise ApiError(400, {"error_message": "request body is not JSON"}) from None
        if not isinstance(value, dict):
            raise ApiError(400, {"error_message": "request body must be a JSON object"})
        return value


_ID = r"[^/]+"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(f"^{pattern}$"), name)
    for method, pattern, name in [
        ("GET", "/workspaces", "get_workspaces"),
        ("GET", "/deployments", "get_deployments"),
        ("GET", f"/deployment/(?P<wd>{_ID})", "get_deployment"),
        ("GET", f"/deployment/(?P<wd>{_ID})/rules", "get_rules"),
        ("GET", "/rules", "get_rules"),
        ("GET", "/instances", "get_instances"),
        ("GET", f"/instance/(?P<iid>{_ID})", "get_instance"),
        ("GET", f"/instance/(?P<iid>{_ID})/sshkey", "get_sshkey"),
        ("POST", f"/new/(?P<target>{_ID})", "new_instance"),
        ("POST", f"/terminate/(?P<iid>{_ID})", "terminate"),
        ("POST", f"/vpn/(?P<iid>{_ID})", "new_vpn_client"),
        ("GET", f"/vpn/(?P<iid>{_ID})", "vpn_status"),
        ("GET", f"/firewall/(?P<iid>{_ID})", "get_firewall"),
        ("POST", f"/firewall/(?P<iid>{_ID})", "add_firewall"),
        ("DELETE", f"/firewall/(?P<iid>{_ID})", "flush_firewall"),
        ("GET", "/reservations", "get_reservations"),
        ("DELETE", f"/reservation/(?P<rid>{_ID})", "cancel_reservation"),
        ("GET", f"/addon/cam/(?P<iid>{_ID})/(?P<camera>[0-9]+)/img", "cam_image"),
        ("POST", f"/addon/drive/(?P<iid>{_ID})/tx", "drive_tx"),
        ("POST", f"/addon/vnc/(?P<iid>{_ID})/(?:start|stop)", "vnc_action"),
        ("POST", f"/addon/(?P<addon>{'|'.join(ADDONS)})/(?P<iid>{_ID})", "activate_addon"),
        ("GET", f"/addon/(?P<addon>{'|'.join(ADDONS)})/(?P<iid>{_ID})", "addon_status"),
        ("DELETE", f"/addon/(?P<addon>{'|'.join(ADDONS)})/(?P<iid>{_ID})", "deactivate_addon"),
        ("GET", "/_sim/state", "sim_state"),
        ("POST", "/_sim/faults", "sim_add_fault"),
        ("DELETE", "/_sim/faults", "sim_clear_faults"),
        ("POST", f"/_sim/instance/(?P<iid>{_ID})/ssh/drop", "sim_drop_ssh"),
        ("POST", f"/_sim/instance/(?P<iid>{_ID})/status", "sim_set_status"),
    ]
]


def _make_handler(sim: RemoteLabSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive for a session that reuses connections
        wbufsize = 64 * 1024  # one write per answer (see actors/telemetry/ingest_server.py)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("rlsim_http", client=self.client_address[0], line=format % args)

        def _dispatch(self, method: str) -> None:
            parts = urlsplit(self.path)
            path = re.sub("/{2,}", "/", parts.path)  # a trailing-slash base_uri gives //path
            query = parse_qs(parts.query, keep_blank_values=True)
            status = 500
            try:
                body = self._read_body()
                if not path.startswith("/_sim/"):
                    self._faults(path)
                self._authorize(path)
                handler, params = self._route(method, path)
                answer = handler(_Request(path, params, query, body))
                status = 200
                self._send(200, answer)
            except ApiError as problem:
                status = problem.status
                self._send(problem.status, problem.body)
            except _RawAnswer as raw:
                status = raw.status
                self._send_raw(raw.status, raw.body, "text/html")
            except Exception:
                log.exception("rlsim_handler_failed", method=method, path=path)
                self._send_raw(500, b"Internal Server Error", "text/plain")
            with sim._lock:
                sim.requests.append({"method": method, "path": path, "status": status})
                del sim.requests[:-1000]

        def _faults(self, path: str) -> None:
            slow = sim.take_fault("slow", path)
            if slow is not None:
                sim.stopping.wait(slow.delay_s)
            broken = sim.take_fault("http_5xx", path)
            if broken is not None:
                raise _RawAnswer(
                    broken.status,
                    f"<html><head><title>{broken.status} Bad Gateway</title></head><body>"
                    f"<center><h1>{broken.status} Bad Gateway</h1></center><hr>"
                    "<center>nginx</center></body></html>\n".encode(),
                )
            if sim.take_fault("wrong_token", path) is not None:
                raise ApiError(400, {"error_message": WRONG_TOKEN_MESSAGE})

        def _authorize(self, path: str) -> None:
            if self.headers.get("Authorization", "") != f"Bearer {sim.token}":
                raise ApiError(400, {"error_message": WRONG_TOKEN_MESSAGE})

        def _read_body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                raise ApiError(413, {"error_message": "request body too large"})
            return self.rfile.read(length) if length else b""

        def _route(
            self, method: str, path: str
        ) -> tuple[Callable[[_Request], dict[str, Any]], dict[str, str]]:
            allowed = False
            for route_method, pattern, name in _ROUTES:
                match = pattern.match(path)
                if match:
                    allowed = True
                    if route_method == method:
                        handler: Callable[[_Request], dict[str, Any]] = getattr(sim, name)
                        return handler, match.groupdict()
            if allowed:
                raise ApiError(405, {"error_message": "method not allowed"})
            raise ApiError(404, {"error_message": "not found"})

        def _send(self, status: int, body: dict[str, Any]) -> None:
            self._send_raw(status, json.dumps(body).encode(), "application/json")

        def _send_raw(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


class _RawAnswer(Exception):
    """A non-JSON answer (the http_5xx fault)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status, self.body = status, body


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m actors.remotelab.simulator",
        description="A simulated rerobots API (HTTP) with an SSH/SFTP server per instance.",
    )
    parser.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    parser.add_argument(
        "--token-file",
        required=True,
        help="the API token accepted (created 0600 with a random token if missing)",
    )
    parser.add_argument("--ssh-host", default="127.0.0.1", help="address of instance SSH servers")
    parser.add_argument(
        "--state-dir",
        help="instance sandboxes and the state a restart takes back (default: a temporary"
        " directory, no state kept)",
    )
    parser.add_argument("--ready-delay-s", type=float, default=1.0, help="INIT to READY")
    parser.add_argument("--addon-delay-s", type=float, default=0.5, help="starting to active")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND[:key=value,...]",
        help=f"arm a fault (repeatable); kinds: {', '.join(FAULT_KINDS)}",
    )
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--listen {args.listen!r}: expected HOST:PORT")
    args.host, args.port = host, int(port)
    try:
        args.faults = [Fault.parse(spec) for spec in args.fault]
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGTERM or SIGINT."""
    from bus.logs import configure_logging  # only an entry point configures logging

    args = _parse_args(argv)
    configure_logging()  # to stderr: stdout carries only the ready line
    token = secret_from_file(args.token_file, create=True)
    sim = RemoteLabSimulator(
        token=token,
        host=args.host,
        port=args.port,
        ssh_host=args.ssh_host,
        state_dir=args.state_dir,
        ready_delay_s=args.ready_delay_s,
        addon_delay_s=args.addon_delay_s,
        faults=args.faults,
    )
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    sim.start()
    ready = {
        "event": "ready",
        "base_uri": sim.base_uri,
        "token_file": str(Path(args.token_file).resolve()),
        "deployments": list(sim.deployments),
        "state_dir": str(sim.state_dir),
    }
    print(json.dumps(ready), flush=True)
    log.info("rlsim_ready", base_uri=sim.base_uri)
    done.wait()
    sim.stop()
    log.info("rlsim_stopped")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
