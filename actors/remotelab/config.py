"""The settings of one remote-lab actor: the ``[actor.options]`` table, read into ``RemoteLabOptions``."""

from __future__ import annotations

from typing import Annotated

from actors.remotelab.protocol import DEFAULT_BASE_URI
from bus.options import NON_BLANK, Range, Seconds, Secret, options

__all__ = ["TOKEN_ENV", "RemoteLabOptions"]

#: The environment variable the published client reads the token from; the actor reads it too
#: when its options give no ``api_token`` (nor ``api_token_file`` / ``api_token_env``).
TOKEN_ENV = "REROBOTS_API_TOKEN"


@options
class RemoteLabOptions:
    """The ``[actor.options]`` of a remote-lab actor (the rerobots API and its instances).

    Args:
        base_uri: The API's root; the real API by default (the simulator: ``http://127.0.0.1:PORT``).
        api_token: The API token (a JWT); better as ``api_token_file`` or ``api_token_env``, or
            left out to use ``$REROBOTS_API_TOKEN``. Never logged, never in ``describe``.
        verify_tls: Check the API's TLS certificate (keep it on outside tests).
        request_timeout_s: Deadline of one HTTP request (the published client has none).
        retries: Extra attempts of a safe (GET) request after a connection error, a timeout or a
            5xx; other requests are retried only when they never reached the server.
        backoff_initial_s: First pause between attempts; doubled per failure.
        backoff_max_s: Cap of that pause.
        state_file: JSON file (0600) keeping the instances this actor started and their SSH keys,
            so that it re-attaches to them after a restart; none: kept in memory only.
        ready_poll_s: Interval of ``GET /instance`` polls while waiting for READY.
        ssh_connect_timeout_s: TCP connect timeout of the SSH client.
        ssh_auth_timeout_s: Banner and authentication timeout of the SSH client.
        ssh_keepalive_s: Interval of SSH keep-alive packets (a dead link is noticed sooner).
        transfer_chunk_bytes: Bytes per SFTP write (progress is reported per chunk).
    """

    base_uri: Annotated[str, NON_BLANK] = DEFAULT_BASE_URI
    api_token: Secret | None = None
    verify_tls: bool = True
    request_timeout_s: Seconds = 30.0
    retries: Annotated[int, Range(ge=0, le=10)] = 2
    backoff_initial_s: Seconds = 0.2
    backoff_max_s: Seconds = 5.0
    state_file: str | None = None
    ready_poll_s: Seconds = 1.0
    ssh_connect_timeout_s: Seconds = 10.0
    ssh_auth_timeout_s: Seconds = 15.0
    ssh_keepalive_s: Seconds = 15.0
    transfer_chunk_bytes: Annotated[int, Range(ge=1024, le=1 << 20)] = 32 * 1024
