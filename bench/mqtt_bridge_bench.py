"""Events bridged to MQTT per second beside raw paho QoS 0 publishing, in one run.

    python bench/mqtt_bridge_bench.py [--events 20000] [--rounds 3] [--json]

One Mosquitto (``bus.mosquitto``, ``max_queued_messages 0`` so it drops nothing), one paho
subscriber (this process) on the topics, and alternately, ``--rounds`` times each:

- raw: a paho client in a process of its own publishes ``--events`` messages at QoS 0, each
  the same JSON envelope the bridge writes (~150 bytes), as fast as ``publish`` returns;
- bridged: a linebus line (``linebus broker``, an ``EchoActor`` ``press`` and the ``mqtt``
  bridge, each its own process) where ``press`` publishes ``--events`` events on
  ``press.tick`` (``emit``, 1000 per call); the bridge publishes each at QoS 0 under its
  namespace as ``<ns>/press/event/tick``.

The rate is what the subscriber received over its span (first to last message); a run also
reports how many arrived (events the linebus publisher or the broker dropped show as fewer).
Medians of the rounds are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bus.client import Client
from bus.mosquitto import Mosquitto
from bus.testing import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
NS = "bench/site/area/line1"
#: What one bridged event carries, so raw messages are the same size.
DATA = {"channel": 3, "value": 21.5, "unit": "C", "ok": True}
RAW_PAYLOAD = json.dumps(
    {"topic": "press.tick", "src": "press", "epoch": 2**52, "seq": 12345, "ts": time.time(),
     "data": DATA},
    separators=(",", ":"),
).encode()  # fmt: skip


class Counter:
    """A paho subscriber counting messages and the span of their arrival."""

    def __init__(self, broker: Mosquitto, topic_filter: str) -> None:
        self.count = 0
        self.first = self.last = 0.0
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        acked = threading.Event()
        self.client.on_subscribe = lambda *_args: acked.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(topic_filter, qos=0)
        if not acked.wait(10):
            raise RuntimeError("no SUBACK")

    def _on_message(self, _c: Any, _u: Any, _m: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        with self._lock:
            if not self.count:
                self.first = now
            self.count += 1
            self.last = now

    def reset(self) -> None:
        with self._lock:
            self.count, self.first, self.last = 0, 0.0, 0.0

    def settle(self, expected: int, timeout: float) -> dict[str, float]:
        """Wait for ``expected`` messages (or for the flow to stop); the run's figures."""
        end = time.monotonic() + timeout
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() < end and self.count < expected:
            time.sleep(0.05)
            if self.count != seen:
                seen, quiet_since = self.count, time.monotonic()
            elif self.count and time.monotonic() - quiet_since > 2.0:
                break  # some were lost: nothing more will come
        with self._lock:
            span = max(self.last - self.first, 1e-9)
            return {"received": self.count, "span_s": span, "per_s": (self.count - 1) / span}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def raw_publisher(host: str, port: int, topic: str, count: int) -> None:
    """Child process: publish ``count`` QoS 0 messages as fast as paho takes them."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    wait_until(client.is_connected, 10, "raw publisher connected")
    infos = [client.publish(topic, RAW_PAYLOAD, qos=0) for _ in range(count)]
    infos[-1].wait_for_publish(30)
    time.sleep(0.5)  # let the socket drain before the disconnect
    client.disconnect()
    client.loop_stop()


def run_raw(broker: Mosquitto, counter: Counter, events: int) -> dict[str, float]:
    counter.reset()
    args = [sys.executable, __file__, "--raw-publisher", broker.host, str(broker.port)]
    subprocess.run([*args, f"{NS}/raw/event/tick", str(events)], check=True, cwd=ROOT)
    return counter.settle(events, 60)


def write_line(folder: Path, broker: Mosquitto) -> Path:
    ports = [free_port() for _ in range(3)]
    config = folder / "line.toml"
    config.write_text(
        f"""
[broker]
command = "tcp://127.0.0.1:{ports[0]}"
publish = "tcp://127.0.0.1:{ports[1]}"
subscribe = "tcp://127.0.0.1:{ports[2]}"

[[actor]]
name = "press"
kind = "echo"
class = "bus.testing:EchoActor"

[[actor]]
name = "uplink"
kind = "mqtt"
[actor.options]
host = "{broker.host}"
port = {broker.port}
namespace = "{NS}"
events = ["press.tick"]
"""
    )
    return config


def run_bridged(client: Client, counter: Counter, events: int) -> dict[str, float]:
    counter.reset()
    sent = 0
    while sent < events:
        batch = min(1000, events - sent)
        client.call("press", "emit", event="tick", count=batch, data=DATA)
        sent += batch
    return counter.settle(events, 60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--raw-publisher", nargs=4, metavar=("HOST", "PORT", "TOPIC", "N"))
    args = parser.parse_args()
    if args.raw_publisher:
        host, port, topic, count = args.raw_publisher
        raw_publisher(host, int(port), topic, int(count))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = Mosquitto(folder / "mosquitto", max_queued_messages=0).start()
        line = subprocess.Popen(
            [sys.executable, "-m", "bus.cli", "up", str(write_line(folder, broker))],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        raw_counter = Counter(broker, f"{NS}/raw/#")
        bridged_counter = Counter(broker, f"{NS}/press/event/#")
        try:
            from bus.config import load

            endpoint = load(folder / "line.toml").broker.command
            with Client(endpoint, timeout=30) as client:
                wait_until(
                    lambda: client.call("uplink", "status")["connected"],
                    30,
                    "the bridge connected",
                    ignore=(Exception,),
                )
                results: dict[str, list[dict[str, float]]] = {"raw": [], "bridged": []}
                for _ in range(args.rounds):
                    results["raw"].append(run_raw(broker, raw_counter, args.events))
                    results["bridged"].append(run_bridged(client, bridged_counter, args.events))
        finally:
            raw_counter.close()
            bridged_counter.close()
            line.terminate()
            line.wait(30)
            broker.stop()
    summary = {
        kind: {
            "per_s": statistics.median(r["per_s"] for r in runs),
            "received": statistics.median(r["received"] for r in runs),
        }
        for kind, runs in results.items()
    }
    ratio = summary["bridged"]["per_s"] / summary["raw"]["per_s"]
    if args.json:
        print(json.dumps({"events": args.events, "summary": summary, "runs": results}, indent=2))
    else:
        print(f"events per run: {args.events}, rounds: {args.rounds} (medians)")
        for kind in ("raw", "bridged"):
            s = summary[kind]
            print(f"  {kind:8} {s['per_s']:>9,.0f} msg/s received {s['received']:>7,.0f}")
        print(f"  bridged / raw paho QoS 0: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
