"""Store-and-forward telemetry with the Spotflow device SDK's semantics (reference/spotflow.md).

Layers, bottom up: ``model`` (values), ``schema`` + ``store`` (the SQLite outbox), ``codec`` and
``upstream`` (the ingest HTTP protocol, docs/INGEST_PROTOCOL.md), ``forwarder`` (the background
sender), ``driver`` (one method per seed operation, for the bus actor). ``ingest_server`` is the
reference upstream.
"""

from actors.telemetry.config import ForwarderConfig, TelemetryConfig
from actors.telemetry.driver import TelemetryDriver
from actors.telemetry.forwarder import Forwarder
from actors.telemetry.model import (
    Ack,
    Compression,
    DesiredProperties,
    MessageKind,
    OutgoingMessage,
    OverflowPolicy,
    StoredMessage,
)
from actors.telemetry.store import QuotaExceeded, TelemetryStore

__all__ = [
    "Ack",
    "Compression",
    "DesiredProperties",
    "Forwarder",
    "ForwarderConfig",
    "MessageKind",
    "OutgoingMessage",
    "OverflowPolicy",
    "QuotaExceeded",
    "StoredMessage",
    "TelemetryConfig",
    "TelemetryDriver",
    "TelemetryStore",
]
