"""What ``linebus web`` runs with: its settings from the command line and the line's config.

Precedence: an option given on the command line, else the config's ``[web]`` and ``[broker]``
tables, else the defaults (``DEFAULT_LISTEN``; the broker at ``LINEBUS_ENDPOINT`` or
``tcp://127.0.0.1:7750``). The app's own keys come from ``--key``/``--broker-key`` or the
environment (``linebus up`` gives the web process its identity's key file so). With tokens on a
secured line, each token's identity connects with ``KEYS_DIR/IDENTITY.key_secret`` (``--keys``,
else the config's ``[security] keys``): every such file is loaded now, so a missing one stops
the start with its name, not the first request of that identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from bus.client import ClientKeys
from bus.config import LineConfig, parse_listen
from bus.errors import ConfigError
from bus.security.exposure import is_local_endpoint
from bus.security.keys import SECRET_SUFFIX, load_keypair
from bus.web.auth import Tokens
from bus.web.state import DEFAULT_LISTEN, WebSettings

__all__ = ["DEFAULT_NICE", "Launch", "launch_settings"]

#: How much ``linebus web`` lowers its CPU priority unless told otherwise (``WebConfig.nice``).
DEFAULT_NICE = 10


@dataclass(frozen=True, slots=True)
class Launch:
    """The app's settings, where it listens, and how much to lower its CPU priority."""

    settings: WebSettings
    listen: str
    nice: int = DEFAULT_NICE


def launch_settings(
    config: LineConfig | None,
    *,
    endpoint: str | None = None,
    subscribe: str | None = None,
    key: str | None = None,
    broker_key: str | None = None,
    listen: str | None = None,
    tokens: str | None = None,
    keys_dir: str | None = None,
    insecure: bool = False,
    call_timeout_s: float | None = None,
    nice: int | None = None,
) -> Launch:
    """Settle the settings of ``linebus web`` (see the module docstring).

    Raises:
        ConfigError: a malformed listen address; a listen address beyond loopback with neither
            tokens nor ``insecure``; an unusable tokens file or key; tokens on a secured line
            without a keys directory.
    """
    web = config.web if config is not None else None
    listen = listen or (web.listen if web is not None else DEFAULT_LISTEN)
    host, _ = parse_listen(listen)
    tokens_path = tokens or (web.tokens if web is not None else None)
    token_map = Tokens.load(tokens_path) if tokens_path is not None else None
    insecure = insecure or (web is not None and web.insecure)
    if token_map is None and not insecure and not is_local_endpoint(f"tcp://{host}:0"):
        raise ConfigError(
            f"linebus web: {listen} is reachable from the network, and without tokens anyone who"
            " reaches it may call the line: give a tokens file (--tokens, or [web] tokens), or"
            " say --insecure (or [web] insecure = true) in so many words"
        )
    keys = ClientKeys.load(key_file=key, broker_key_file=broker_key)
    identity_keys = _token_keys(config, keys, token_map, keys_dir)
    if endpoint is None and config is not None:
        here = config.broker.endpoints_from_here()
        endpoint = here["command"]
        subscribe = subscribe or here["subscribe"]
    settings = WebSettings(
        endpoint=endpoint,
        subscribe_endpoint=subscribe,
        keys=keys,
        tokens=token_map,
        identity_keys=identity_keys,
    )
    if web is not None:
        settings = replace(
            settings, call_timeout_s=web.call_timeout_s, max_body_bytes=web.max_body_bytes
        )
    if call_timeout_s is not None:
        settings = replace(settings, call_timeout_s=call_timeout_s)
    if nice is None:
        nice = web.nice if web is not None else DEFAULT_NICE
    return Launch(settings, listen, nice)


def _token_keys(
    config: LineConfig | None,
    keys: ClientKeys | None,
    tokens: Tokens | None,
    keys_dir: str | None,
) -> dict[str, ClientKeys | None]:
    """The keys of every token identity (all None on a plaintext line)."""
    if tokens is None:
        return {}
    if keys is None:
        return dict.fromkeys(tokens.names)
    folder = Path(keys_dir) if keys_dir else (config.security.keys if config else None)
    if folder is None:
        raise ConfigError(
            "linebus web: tokens on a secured line need the keys directory of their identities"
            " (--keys DIR, or the config's [security] keys)"
        )
    found: dict[str, ClientKeys | None] = {}
    for name in sorted(tokens.names):
        path = folder / f"{name}{SECRET_SUFFIX}"
        found[name] = ClientKeys(load_keypair(file=path), keys.broker, os.fspath(path))
    return found
