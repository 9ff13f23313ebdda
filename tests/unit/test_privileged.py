"""Which commands each actor kind declares privileged (issue 10): those that change a device,
its files, its firmware, its trust or its credentials, and telemetry writes. On a secured line
only the operators may call them, and every call is audited; read-only commands stay open.
And the actors' secrets (device passwords, provisioning tokens): from a file or the environment,
never in the actor's options or description."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from bus.actor import Actor
from bus.commands import privileged_commands

FLUX_WRITES = {
    # files
    "mkdir",
    "rmdir",
    "cpfile",
    "rmfile",
    "upload_file",
    # jobs
    "select_file",
    "start_play",
    "pause_play",
    "resume_play",
    "abort_play",
    "quit_play",
    "restart_play",
    "set_toolhead_operating_in_play",
    "set_toolhead_standby_in_play",
    "set_toolhead_heater_in_play",
    "load_filament_in_play",
    "unload_filament_in_play",
    "press_button_in_play",
    # configuration, sessions, firmware
    "config_set",
    "config_del",
    "kick",
    "update_firmware",
    # maintain and scan modes: they move, heat, calibrate and reset the machine
    "maintain",
    "maintain_home",
    "maintain_move",
    "maintain_calibrate",
    "maintain_zprobe",
    "maintain_manual_level",
    "maintain_set_heater",
    "maintain_load_filament",
    "maintain_load_flexible_filament",
    "maintain_unload_filament",
    "maintain_interrupt_load_filament",
    "maintain_update_hbfw",
    "maintain_reset_hardware",
    "maintain_quit",
    "scan",
    "scan_step_length",
    "scan_forward",
    "scan_backward",
    "scan_laser",
    "scan_calibrate",
    "scan_quit",
    # the device's cloud binding (signed with the actor's key), raw G-code, the SDK mode
    "get_cloud_validation_code",
    "raw",
    "raw_send",
    "raw_quit",
    "icontrol",
    "icontrol_quit",
}
FLUX_READS = {
    "list_files",
    "file_info",
    "file_md5",
    "download_file",
    "report_play",
    "play_info",
    "deviceinfo",
    "config_get",
    "maintain_head_info",
    "maintain_head_status",
    "scan_check_camera",
    "scan_get_calibrate",
    "fetch_log",
    "position",
    "raw_recv",
    "camera_frame",
    "camera_start",
    "camera_stop",
}

EXPECTED: dict[str, tuple[str, set[str], set[str]]] = {
    "flux": ("actors.flux.actor", FLUX_WRITES, FLUX_READS),
    "discovery": (
        "actors.discovery.actor",
        {"authorize", "add_trust", "remove_trust", "rename", "modify_password", "modify_network"},
        {"list", "get", "discover_device", "touch", "poke", "list_trust", "get_wifi_list"},
    ),
    "flashrunner": (
        "actors.flashrunner.actor",
        {
            "FR_SendCommand",
            "FR_SendCommand_Ex",
            "FR_SendFile",
            "FR_GetFile",  # the unit's files hold firmware images, projects and licences
            "FR_RunProject",
            "FR_DynMemSendHeader",
            "FR_DynMemWriteEncrypted",
            "FR_DynMemWrite",
        },
        {"FR_GetAnswer", "FR_GetPublicKey", "FR_GetDllVersion", "FR_EncryptData"},
    ),
    "telemetry": (
        "actors.telemetry.actor",
        {
            "send_message",
            "enqueue_message",
            "enqueue_messages",
            "enqueue_batch_completion",
            "enqueue_message_completion",
            "update_reported_properties",
        },
        {"device_id", "pending_messages_count", "get_desired_properties", "history", "stats"},
    ),
    "remotelab": (
        "actors.remotelab.actor",
        {
            # instances: booking, ending, credentials
            "request_instance",
            "terminate_instance",
            "terminate",
            "get_vpn_newclient",
            "attach",
            # add-ons
            "activate_addon_cam",
            "deactivate_addon_cam",
            "activate_addon_mistyproxy",
            "deactivate_addon_mistyproxy",
            "activate_addon_drive",
            "deactivate_addon_drive",
            "send_drive_command",
            "activate_addon_vnc",
            "deactivate_addon_vnc",
            "start_addon_vnc",
            "stop_addon_vnc",
            # firewall and reservations
            "add_firewall_rule",
            "flush_firewall_rules",
            "cancel_reservation",
            # reaching into an instance
            "start_sshclient",
            "stop_sshclient",  # it breaks what runs on the connection
            "exec_ssh",
            "put_file",
            "get_file",
        },
        {
            "get_wtypes",
            "get_wdeployments",
            "get_wdeployment_info",
            "get_instances",
            "get_instance_info",
            "status_addon_cam",
            "get_snapshot_cam",
            "status_addon_mistyproxy",
            "status_addon_drive",
            "status_addon_vnc",
            "get_firewall_rules",
            "get_reservations",
            "get_status",
            "get_details",
            "wait_until_ready",
        },
    ),
}


def actor_class(module: str) -> type[Actor]:
    cls = pytest.importorskip(module).ACTOR
    assert issubclass(cls, Actor)
    return cls


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_privileged_commands_of_each_kind(kind: str) -> None:
    """Each kind declares exactly its writes privileged; its reads and the built-ins are open."""
    module, writes, reads = EXPECTED[kind]
    cls = actor_class(module)
    assert set(privileged_commands(cls.commands)) == writes
    assert reads <= set(cls.commands)
    assert not {name for name in reads | {"ping", "describe"} if cls.commands[name].privileged}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_describe_says_privileged(kind: str) -> None:
    """The description of every command says whether it is privileged."""
    cls = actor_class(EXPECTED[kind][0])
    flags = {name: spec.describe()["privileged"] for name, spec in cls.commands.items()}
    assert {name for name, flag in flags.items() if flag} == EXPECTED[kind][1]
    assert all(isinstance(flag, bool) for flag in flags.values())


# --- secrets from files and the environment, never shown ------------------------------------


@pytest.mark.parametrize(
    ("module", "options", "secret_key", "attribute"),
    [
        ("actors.flux.actor", {"host": "127.0.0.1"}, "password", "password"),
        ("actors.discovery.actor", {}, "password", "password"),
        (
            "actors.telemetry.actor",
            {"db": "t.db", "instance_url": "http://127.0.0.1:1"},
            "provisioning_token",
            "",
        ),
    ],
)
@pytest.mark.parametrize("source", ["file", "env"])
def test_actor_secrets_from_a_file_or_the_environment(
    module: str,
    options: dict[str, str],
    secret_key: str,
    attribute: str,
    source: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every kind's password or token may come from ``<key>_file`` or ``<key>_env``: the actor
    gets the secret, and neither its options nor its description hold it."""
    secret = f"s3cret-{secrets.token_hex(8)}"
    if source == "file":
        path = tmp_path / "secret"
        path.write_text(secret + "\n")
        path.chmod(0o600)
        given = {f"{secret_key}_file": str(path)}
    else:
        monkeypatch.setenv("ACTOR_SECRET", secret)
        given = {f"{secret_key}_env": "ACTOR_SECRET"}
    monkeypatch.chdir(tmp_path)  # the telemetry store goes here
    actor = actor_class(module)("a1", {**options, **given})
    try:
        if attribute:
            assert getattr(actor, attribute) == secret
        else:
            assert actor.config.forwarder.provisioning_token == secret
        shown = json.dumps([actor.options, actor._description()], default=str)
        assert secret not in shown
    finally:
        writer = getattr(actor, "_writer", None)
        if writer is not None:
            writer.shutdown()


@pytest.mark.parametrize("source", ["file", "env", "REROBOTS_API_TOKEN"])
def test_remotelab_token_from_a_file_or_the_environment(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rerobots API token comes from ``api_token_file``, ``api_token_env`` or, as the
    published client reads it, ``$REROBOTS_API_TOKEN``; it goes into the Authorization header
    and nowhere the bus or a log could show it."""
    from actors.remotelab.config import TOKEN_ENV

    secret = f"eyJ-{secrets.token_hex(8)}"
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    given: dict[str, str] = {}
    if source == "file":
        path = tmp_path / "token"
        path.write_text(secret + "\n")
        path.chmod(0o600)
        given = {"api_token_file": str(path)}
    elif source == "env":
        monkeypatch.setenv("LAB_TOKEN", secret)
        given = {"api_token_env": "LAB_TOKEN"}
    else:
        monkeypatch.setenv(TOKEN_ENV, secret)
    actor = actor_class("actors.remotelab.actor")("lab", given)
    request = actor.api.get_instances()
    assert request.headers["Authorization"] == f"Bearer {secret}"
    description = actor._description()
    assert description["api"]["token"] == ("environment" if source == TOKEN_ENV else "options")
    shown = json.dumps([actor.options, description, repr(actor.api), repr(request)], default=str)
    assert secret not in shown
