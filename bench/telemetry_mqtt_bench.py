"""Telemetry forwarded through the MQTT upstream beside raw paho QoS 1 publishing, in one run.

    python bench/telemetry_mqtt_bench.py [--messages 20000] [--rounds 3] [--json]

One Mosquitto (``bus.mosquitto``, ``max_queued_messages 0``), and alternately, ``--rounds``
times each:

- raw: a paho 2 client (MQTT 5, ``loop_start``, in-flight window 100) publishes ``--messages``
  messages of 100 bytes at QoS 1 as fast as ``publish`` returns, and waits for the last PUBACK;
- forwarded: a telemetry store holding ``--messages`` messages of 100 bytes (stored before the
  clock starts) is drained by ``TelemetryDriver`` with ``upstream = "mqtt"`` (in-flight window
  100, batches of 5000): one QoS 1 PUBLISH per message with its MQTT 5 user properties
  (``message_id``, ``ts``), each marked sent in SQLite after its PUBACK.

Rate = messages acknowledged by the broker per second, from the start (connect included) to the
last PUBACK (raw) or ``wait_sent`` (forwarded). Medians of the rounds and their ratio (target:
forwarded >= 0.7 of raw). Nobody subscribes: both measure the publishing side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from actors.telemetry import (
    ForwarderConfig,
    OutgoingMessage,
    TelemetryConfig,
    TelemetryDriver,
    TelemetryStore,
)
from actors.telemetry.config import MqttUpstreamConfig
from bus.logs import configure_logging
from bus.mosquitto import Mosquitto
from bus.testing import wait_until

NS = "bench/site/area/line1"
PAYLOAD = b"x" * 100
INFLIGHT = 100
BATCH = 5000


def raw(broker: Mosquitto, n: int) -> float:
    """Messages per second of plain paho QoS 1 publishing (until the last PUBACK)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(INFLIGHT)
    client.max_queued_messages_set(0)
    start = time.perf_counter()
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        wait_until(client.is_connected, 10.0, "raw client connected")
        infos = [client.publish(f"{NS}/raw/telemetry/g/s", PAYLOAD, qos=1) for _ in range(n)]
        for info in infos:
            info.wait_for_publish(60.0)
        return n / (time.perf_counter() - start)
    finally:
        client.disconnect()
        client.loop_stop()


def forwarded(broker: Mosquitto, folder: Path, n: int, round_no: int) -> float:
    """Messages per second drained from a store through the MQTT upstream."""
    db = folder / f"bench-{round_no}.db"
    with TelemetryStore.open(str(db)) as store:  # filled before the clock starts
        for first in range(0, n, 1000):
            count = min(1000, n - first)
            store.append_many([OutgoingMessage.create(PAYLOAD, stream="s")] * count)
    upstream = MqttUpstreamConfig(
        host=broker.host, port=broker.port, namespace=NS, max_inflight=INFLIGHT
    )
    config = ForwarderConfig(
        upstream="mqtt",
        device_id=f"dev{round_no}",
        mqtt=upstream,
        linger_s=0.0,
        max_batch_messages=BATCH,
        max_batch_bytes=1 << 20,
    )
    start = time.perf_counter()
    driver = TelemetryDriver.start(TelemetryConfig(db=str(db), forwarder=config))
    try:
        if not driver.forwarder.wait_sent(timeout=300.0):
            raise RuntimeError("the forwarder did not drain the store in 300 s")
        return n / (time.perf_counter() - start)
    finally:
        driver.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    configure_logging(level="warning")
    runs: dict[str, list[float]] = {"raw": [], "forwarded": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with Mosquitto(folder / "mosquitto", max_queued_messages=0) as broker:
            for round_no in range(args.rounds):  # alternate: the load of the machine varies
                runs["raw"].append(raw(broker, args.messages))
                runs["forwarded"].append(forwarded(broker, folder, args.messages, round_no))
    medians = {name: statistics.median(values) for name, values in runs.items()}
    result: dict[str, Any] = {
        "messages": args.messages,
        "runs": {name: [round(v) for v in values] for name, values in runs.items()},
        "median": {name: round(v) for name, v in medians.items()},
        "ratio": round(medians["forwarded"] / medians["raw"], 2),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for name in runs:
            figures = " / ".join(str(v) for v in result["runs"][name])
            print(f"{name:>9}: median {result['median'][name]} msg/s  ({figures})")
        print(f"forwarded / raw: {result['ratio']} (target >= 0.7)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
