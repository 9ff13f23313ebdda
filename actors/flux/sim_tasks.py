"""The simulator's maintain and scan tasks (flux.md §1.6): answers to their sub-commands.

Macros (calibration, z-probe, filament) answer at once with their ``continue`` / ``CTRL ...``
progress lines and final ``ok``; the real device takes seconds to minutes. Photos are real
baseline JPEGs (``actors.simsupport.jpeg``, 64 x 48): a gradient whose tint tells the three
``scanimages`` shots apart, with a bar that moves with the time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from actors.flux.sim_storage import SimError
from actors.simsupport.jpeg import camera_frame

__all__ = ["SCAN_SHOTS", "maintain_command", "scan_command", "scan_photo"]

Send = Callable[[str], None]
SendBinary = Callable[[str, bytes], None]

HEAD_INFO = {
    "module": "EXTRUDER",
    "version": "1.0.9",
    "vendor": "FLUX .inc",
    "id": "sim-head",
    "max_temperature": 235.0,
}


#: The ``scanimages`` shots in the device's order: left laser on, right laser on, both off.
SCAN_SHOTS = ("left", "right", "none")


def scan_photo(shot: str = "oneshot") -> bytes:
    """A JPEG photo of the scanner camera: ``oneshot`` or one of ``SCAN_SHOTS``."""
    tint = 0 if shot == "oneshot" else 1 + SCAN_SHOTS.index(shot)
    return camera_frame(tint, time.time())


def _float_args(words: list[str], count: int) -> list[float]:
    if len(words) != count:
        raise SimError("BAD_PARAMS")
    try:
        return [float(word) for word in words]
    except ValueError:
        raise SimError("BAD_PARAMS") from None


def maintain_command(words: list[str], send: Send, send_binary: SendBinary) -> None:
    """Answer one maintain-task command (``quit`` and ``reset_mb`` are handled by the session)."""
    del send_binary
    command, args = words[0], words[1:]
    if command == "home":
        send("DEBUG HOMING")
        send("ok")
    elif command == "move":
        if not args or any(":" not in arg or arg[0] not in "fxyze" for arg in args):
            raise SimError("BAD_PARAMS")
        send("ok")
    elif command == "calibration":
        send("continue")
        for point in (1, 2, 3):
            send(f"CTRL POINT {point}")
        send("ok 0.0100 -0.0200 0.0300")
    elif command == "zprobe":
        send("continue")
        send("CTRL ZPROBE")
        send(f"ok {_float_args(args, 1)[0] if args else 0.1234:.4f}")
    elif command == "headinfo":
        send("ok " + json.dumps(HEAD_INFO))
    elif command == "headstatus":
        send("ok " + json.dumps({"module": "EXTRUDER", "rt": [25.0], "tt": [0.0], "tf": [0.0]}))
    elif command == "extruder_temp":
        if len(args) != 2 or args[0] != "0":
            raise SimError("BAD_PARAMS")
        _float_args(args[1:], 1)
        send("ok")
    elif command == "diagnosis_sensor":
        send("ok x_endstop=OK\x00y_endstop=OK\x00z_endstop=OK\x00filament_0=OK")
    elif command == "hal_diagnosis":
        send("ok HAL_OK")
    elif command in ("load_filament", "load_flexible_filament", "unload_filament"):
        temperature = _float_args(args, 2)[1]
        send("continue")
        send(f"CTRL HEATING {temperature:.1f}")
        send("CTRL UNLOADING" if command == "unload_filament" else "CTRL LOADING")
        send("ok")
    elif command == "stop_load_filament":
        pass  # no answer, as on the device
    else:
        raise SimError("UNKNOWN_COMMAND")


def scan_command(words: list[str], send: Send, send_binary: SendBinary) -> None:
    """Answer one scan-task command (``quit`` is handled by the session)."""
    command, args = words[0], words[1:]
    if command == "set" and args[:1] == ["steplen"]:
        _float_args(args[1:], 1)
        send("ok")
    elif command in ("scan_next", "scan_backward"):
        send("ok")
    elif command == "scanlaser":
        if args and set(args[0]) - set("lr"):
            raise SimError("BAD_PARAMS")
        send("ok")
    elif command == "scan_check":
        send("ok camera")  # assumption: the raw line of the camera service is not public
    elif command in ("calibrate", "get_cab"):
        send("ok 320 320 320")
    elif command == "oneshot":
        send_binary("image/jpeg", scan_photo())
        send("ok")
    elif command == "scanimages":
        for shot in SCAN_SHOTS:
            send_binary("image/jpeg", scan_photo(shot))
        send("ok")
    else:
        raise SimError("UNKNOWN_COMMAND")
