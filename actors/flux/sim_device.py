"""The simulated device's state: identity, keys, trust list, config, job and faults.

Shared by the robot, management and UDP servers of ``FluxSimulator``; it does no network I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.flux.fcode import FcodeError, read_fcode
from actors.flux.sim_storage import SimError, SimStorage
from actors.fluxfamily import crypto
from actors.fluxfamily.datagram import STATUS_LABELS, Status

__all__ = ["Faults", "SimDevice", "SimJob", "TrustedKey"]

log = structlog.get_logger()

CONFIG_CHOICES: dict[str, frozenset[str] | None] = {
    "correction": frozenset("AaHN"),
    "filament_detect": frozenset("YN"),
    "head_error_level": None,
    "movement_test": frozenset("YN"),
    "autoresume": frozenset("YN"),
    "broadcast": frozenset("LAN"),
    "enable_cloud": frozenset("ANR"),
    "zoffset": None,
    "zprobe_dist": None,
    "replay": frozenset("YN"),
    "enable_backlash": frozenset("YN"),
    "plus_extrusion": frozenset("YN"),
    "camera_version": frozenset("01"),
    "bare": frozenset("YN"),
    "player_postback_url": None,
    "backlash": None,
    "leveling": None,
}


#: st_id of the device while a task holds it (flux.md §1.6 ``player report``). **Assumption**:
#: the order -1, -2, -3, -10 follows the reference's list (maintain, scan, icontrol, raw).
HOLDER_ST_ID = {"MaintainTask": -1, "ScanTask": -2, "IControlTask": -3, "RawTask": -10}
#: The logs ``fetch_log`` serves, relative to the device's log folder.
LOGS = {
    "fluxrobotd.log": b"[robot] simulated device started\n",
    "fluxplayerd.log": b"[player] idle\n",
}


@dataclass
class Faults:
    """Faults to inject (constructor, CLI flags, or set at run time).

    Args:
        drop_upload_after: Close the robot connection once this many bytes of an upload arrived
            (used up when it fires).
        error_label: Put this label in the announced status (and the job's ``error`` list).
        silent: Stop announcing and answering on UDP (the device seems gone).
        mute: Read robot commands but never answer them (a hung device).
    """

    drop_upload_after: int | None = None
    error_label: str = ""
    silent: bool = False
    mute: bool = False


@dataclass
class TrustedKey:
    """One entry of the trust list."""

    key: rsa.RSAPublicKey
    label: str
    kind: str = "U"


class SimJob:
    """A print job walking the device's status ids (flux.md §2.11) in ``duration_s``.

    start: 1 → 4 → 16 (prog grows) → 66 → 64; pause: 16 → 50 → 48; resume: 48 → 18 → 16;
    abort: → 130 → 128; quit (from 64/128) → 0. Each transitional id lasts one tick
    (duration / 20, between 10 and 100 ms).
    """

    def __init__(
        self, metadata: dict[str, str], duration_s: float, on_change: Callable[[], None]
    ) -> None:
        self.metadata = metadata
        self.duration_s = duration_s
        self.tick_s = min(max(duration_s / 20, 0.01), 0.1)
        self.st_id = 1
        self.prog = 0.0
        self.session = secrets.token_hex(3)
        self.started_at = time.monotonic()
        self._on_change = on_change
        self._wanted: list[int] = [4, 16]
        self._task = asyncio.create_task(self._run(), name="flux-sim-job")

    def _set(self, st_id: int) -> None:
        self.st_id = st_id
        self._on_change()

    async def _run(self) -> None:
        step = self.tick_s / self.duration_s
        while True:
            await asyncio.sleep(self.tick_s)
            if self._wanted:
                self._set(self._wanted.pop(0))
            elif self.st_id == 16:
                self.prog = min(1.0, self.prog + step)
                if self.prog >= 1.0:
                    self._wanted = [64]
                    self._set(66)
                else:
                    self._on_change()
            if self.st_id in (64, 128):
                return

    @property
    def finished(self) -> bool:
        """Completed or aborted: ``player quit`` is allowed."""
        return self.st_id in (64, 128)

    def pause(self) -> None:
        """Pause a running or starting job."""
        if self.st_id not in (4, 16):
            raise SimError("RESOURCE_BUSY")
        self._wanted = [48] if self.st_id == 16 else [36]
        self._set(50 if self.st_id == 16 else 38)

    def resume(self) -> None:
        """Resume a paused job."""
        if self.st_id not in (36, 48):
            raise SimError("RESOURCE_BUSY")
        self._wanted = [16]
        self._set(18 if self.st_id == 48 else 6)

    def abort(self) -> None:
        """Abort the job."""
        if self.finished or self.st_id == 130:
            raise SimError("RESOURCE_BUSY")
        self._wanted = [128]
        self._set(130)

    def report(self, error_label: str) -> dict[str, Any]:
        """The ``player report`` JSON."""
        return {
            "session": self.session,
            "st_id": self.st_id,
            "st_label": STATUS_LABELS.get(self.st_id, "UNKNOWN"),
            "error": error_label.split() if error_label else [],
            "time_total": self.duration_s,
            "time_running": round(time.monotonic() - self.started_at, 3),
            "prog": round(self.prog, 4),
            "traveled": round(self.prog * 1000.0, 1),
            "pos": [0.0, 0.0, 100.0],
            "module": "EXTRUDER",
            "rt": [200.0],
        }

    def stop(self) -> None:
        """Cancel the stepping task (simulator shutdown)."""
        self._task.cancel()


@dataclass
class SimDevice:
    """Everything one simulated device knows."""

    name: str
    serial: str
    model: str
    version: str
    master_key: rsa.RSAPrivateKey
    slave_key: rsa.RSAPrivateKey
    password: str
    job_duration_s: float
    storage: SimStorage
    faults: Faults
    uuid: uuidlib.UUID = field(init=False)
    trust: dict[str, TrustedKey] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)
    selected: tuple[dict[str, str], list[bytes], bytes] | None = None
    job: SimJob | None = None
    holder: tuple[str, str] | None = None  # (client ip, a HOLDER_ST_ID key) of the lock
    firmware_images: list[bytes] = field(default_factory=list)
    logs: dict[str, bytes] = field(default_factory=lambda: dict(LOGS))
    slave_ts: float = field(init=False)
    status_changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        # The firmware's dev identity (flux.md §2.9): 8 x 0xFF, then SHA-512 of the master DER,
        # with serial XXXXXXXXXX, which unmodified fluxclient accepts without a factory signature.
        digest = hashlib.sha512(crypto.public_der(self.master_key)).digest()
        self.uuid = uuidlib.UUID(bytes=b"\xff" * 8 + digest[8:16])
        self.slave_ts = float(int(time.time()))

    # ------------------------------------------------------------ trust and identity

    def trusted_key(self, access_id: bytes) -> rsa.RSAPublicKey | None:
        """The trusted public key with this 20-byte access id, if any."""
        entry = self.trust.get(access_id.hex())
        return entry.key if entry else None

    def add_trust(self, key: rsa.RSAPublicKey, label: str, kind: str = "U") -> str:
        """Trust ``key``; return its access id (hex).

        Raises:
            SimError: ``OPERATION_ERROR`` when it is already trusted.
        """
        ident = crypto.access_id(key).hex()
        if ident in self.trust:
            raise SimError("OPERATION_ERROR")
        self.trust[ident] = TrustedKey(key, label, kind)
        return ident

    def bump_metadata(self) -> None:
        """A name or config change: announce a newer ``slave_ts`` so clients touch again.

        float32 carries it, which at epoch magnitudes has a 128 s spacing, hence the big step.
        """
        self.slave_ts += 256.0
        self.status_changed.set()

    def touch_info(self) -> dict[str, str]:
        """The ``info`` of a touch response."""
        return {
            "ver": self.version,
            "model": self.model,
            "name": self.name,
            "pwd": "T" if self.password else "F",
            "time": str(int(time.time())),
        }

    # ------------------------------------------------------------ status

    def status(self) -> Status:
        """The announced status block."""
        if self.holder is not None:
            st_id = HOLDER_ST_ID[self.holder[1]]
            return Status(time.time(), st_id, 0.0, "EXTRUDER", self.holder[0])
        if self.job is not None:
            return Status(
                time.time(), self.job.st_id, self.job.prog, "EXTRUDER", self.faults.error_label
            )
        return Status(time.time(), 0, 0.0, "EXTRUDER", self.faults.error_label)

    def notify(self) -> None:
        """Something in the status changed: the UDP side announces at once."""
        self.status_changed.set()

    def report(self) -> dict[str, Any]:
        """The ``player report`` answer in every state."""
        if self.holder is not None:
            st_id = HOLDER_ST_ID[self.holder[1]]
            return {
                "st_id": st_id,
                "st_label": "OCCUPIED",
                "info": f"{self.holder[0]}@{self.holder[1]}",
            }
        if self.job is None:
            return {"st_id": 0, "st_label": "IDLE"}
        return self.job.report(self.faults.error_label)

    # ------------------------------------------------------------ job

    def select(self, data: bytes) -> None:
        """Make ``data`` the selected job file (``player select`` or a ``#`` upload)."""
        try:
            metadata, images = read_fcode(data)
        except FcodeError:
            metadata, images = {}, []
        self.selected = (metadata, images, data)

    def start_job(self) -> None:
        """``player start``."""
        if self.holder is not None or (self.job is not None and not self.job.finished):
            raise SimError("RESOURCE_BUSY")
        if self.selected is None:
            raise SimError("NO_TASK")
        metadata, _images, data = self.selected
        try:
            read_fcode(data)
        except FcodeError:
            raise SimError("FILE_BROKEN", "HEADER_ERROR") from None
        if self.job is not None:
            self.job.stop()
        self.job = SimJob(metadata, self.job_duration_s, self.notify)
        self.notify()
        log.info("flux_sim_job_started", device=self.name, duration_s=self.job_duration_s)

    def running_job(self) -> SimJob:
        """The current job (``NO_TASK`` otherwise)."""
        if self.job is None:
            raise SimError("NO_TASK")
        return self.job

    def quit_job(self) -> None:
        """``player quit``: only from completed or aborted."""
        job = self.running_job()
        if not job.finished:
            raise SimError("RESOURCE_BUSY")
        self.job = None
        self.notify()

    def set_config(self, key: str, value: str) -> None:
        """``config set`` with the device's validation."""
        if key not in CONFIG_CHOICES:
            raise SimError("BAD_PARAMS")
        choices = CONFIG_CHOICES[key]
        if choices is not None and value not in choices:
            raise SimError("BAD_PARAMS")
        if key == "player_postback_url" and len(value) > 128:
            raise SimError("BAD_PARAMS")
        self.config[key] = value
        if key in ("broadcast", "enable_cloud"):
            self.bump_metadata()

    def stop(self) -> None:
        """Stop background work (simulator shutdown)."""
        if self.job is not None:
            with contextlib.suppress(Exception):
                self.job.stop()
