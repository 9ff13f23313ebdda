"""The settings of one FLUX robot driver: where the device is and how it is timed."""

from __future__ import annotations

from bus.options import Port, PositiveInt, Seconds, options

__all__ = ["CAMERA_PORT", "ROBOT_PORT", "FluxConfig"]

ROBOT_PORT = 23811
CAMERA_PORT = 23812


@options
class FluxConfig:
    """How the driver talks to one FLUX device.

    Args:
        port: Robot TCP port.
        camera_port: Camera TCP port (protocol 3, JPEG frames).
        connect_timeout_s: TCP connect plus handshake (fluxclient has none; a controller must).
        reply_timeout_s: Wait for each answer frame (fluxclient waits 180 s).
        mode_timeout_s: Wait for ``maintain``/``scan`` entry and macros (the device homes first).
        firmware_timeout_s: Wait for the verdict after a firmware image (fluxclient: 45 s).
        backoff_initial_s: Pause after a failed reconnect attempt; doubles per failure.
        backoff_max_s: Cap of that pause.
        chunk_bytes: Upload write size (fluxclient reads 4 KiB at a time).
        progress_interval_s: Minimum time between two progress callbacks (first and last always fire).
    """

    port: Port = ROBOT_PORT
    camera_port: Port = CAMERA_PORT
    connect_timeout_s: Seconds = 10.0
    reply_timeout_s: Seconds = 30.0
    mode_timeout_s: Seconds = 120.0
    firmware_timeout_s: Seconds = 45.0
    backoff_initial_s: Seconds = 0.5
    backoff_max_s: Seconds = 30.0
    chunk_bytes: PositiveInt = 4096
    progress_interval_s: Seconds = 0.2
