"""The telemetry part of ``linebus demo``: a line's readings, stored on the controller and forwarded.

Through the ``spotflow_device`` facade: readings enqueued one by one and in batches, forwarded
to the reference ingestion server (the demo's stand-in for the plant's service), counted there;
a desired property set by the plant operator reaches the device, the device reports back.
"""

from __future__ import annotations

import json
import queue
import time
from typing import Any

import requests

from bus.client import Client
from bus.tours import Say
from clients.telemetry import Compression, DesiredProperties, DeviceClient

__all__ = ["tour"]

GROUP, STREAM = "line3", "temperatures"
BATCH = 1000
BULK = 20_000  # readings sent pipelined, to show the rate


def _server(upstream: str, method: str, path: str, body: Any = None) -> Any:
    response = requests.request(method, upstream + path, json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def _server_count(upstream: str, device_id: str) -> int:
    rows = _server(upstream, "GET", f"/v1/operator/devices/{device_id}/messages")["messages"]
    return sum(1 for row in rows if row["stream"] == STREAM)


def tour(bus: Client, service: str, say: Say) -> None:
    """Enqueue readings, watch them reach the ingestion server, round-trip the twin."""
    updates: queue.Queue[DesiredProperties] = queue.Queue()
    with DeviceClient.start(
        None,
        "",
        "spotflow.db",
        desired_properties_updated_callback=updates.put,
        bus=bus,
        service=service,
    ) as client:
        stats = client.stats()
        upstream, device_id = stats["upstream"], client.device_id
        say(
            f"  {service} keeps every reading in SQLite on the controller and forwards it to {upstream}"
        )
        say(
            "  (the reference ingestion server, standing in for the plant's); registered as device "
            f"{device_id!r}"
        )
        before = _server_count(upstream, device_id)
        desired = updates.get(timeout=10)
        say(
            "  code written for spotflow_device runs unchanged: DeviceClient.start(...), desired "
            f"properties v{desired.version}"
        )

        sender = client.create_stream_sender(
            stream_group=GROUP, stream=STREAM, compression=Compression.FASTEST
        )
        with bus.subscribe(f"{service}.stream.{GROUP}.{STREAM}") as live:
            live.wait_ready()
            for i in range(5):
                reading = {"sensor": "oven-1", "temp_c": round(180 + i * 0.4, 1), "t": time.time()}
                sender.enqueue_message(json.dumps(reading).encode())
            event = live.next(5)
            if event is not None:
                say(
                    "  sender.enqueue_message(...) x5; each is durable before it returns, and live "
                    "on the bus:"
                )
                say(
                    f"    {event.topic} stream_seq={event.data['stream_seq']} "
                    f"payload={event.data['payload'].decode()}"
                )
            started = time.monotonic()
            acks = sender.enqueue_messages(
                [
                    json.dumps({"sensor": f"cell-{i % 8}", "temp_c": 20 + (i % 50) / 10})
                    for i in range(BATCH)
                ]
            )
            say(
                f"  sender.enqueue_messages({BATCH} readings): one round trip, one commit, "
                f"acked in {time.monotonic() - started:.3f} s (stream_seq "
                f"{acks[0]['stream_seq']}..{acks[-1]['stream_seq']})"
            )
            started_bulk = time.monotonic()
            bulk = sender.enqueue_messages(
                [
                    json.dumps({"sensor": f"cell-{i % 8}", "temp_c": 20 + (i % 50) / 10})
                    for i in range(BULK)
                ],
                batch_size=500,
                in_flight=4,
            )
            took = time.monotonic() - started_bulk
            say(
                f"  sender.enqueue_messages({BULK} readings, batch_size=500, in_flight=4): "
                f"{BULK // 500} commits with 4 calls in flight, "
                f"all acked in {took:.3f} s ({BULK / took:,.0f} durable readings/s)"
            )
            acks += bulk
            say(f"  pending_messages_count right after: {client.pending_messages_count}")
            client.wait_enqueued_messages_sent(timeout=60)
            say(
                "  wait_enqueued_messages_sent() returned after "
                f"{time.monotonic() - started:.2f} s; pending now {client.pending_messages_count}"
            )
            seen, missed = 0, 0
            while (event := live.next(0.5)) is not None:
                seen += 1
                missed += event.missed
        after = _server_count(upstream, device_id)
        sent = 5 + BATCH + BULK
        say(
            f"  the ingestion server stored {after - before} new readings of {STREAM} ({after} in all); "
            f"{sent} were enqueued: {'nothing lost, nothing twice' if after - before == sent else 'MISMATCH'}"
        )
        last = acks[-1]["stream_seq"]
        backfill = client.history(GROUP, STREAM, from_seq=last - 1, to_seq=last)
        say(
            "  a subscriber that missed events backfills from history: "
            f"stream_seq {[m['stream_seq'] for m in backfill]} are {backfill[-1]['state']}"
        )

        rate = 1 + int(time.time()) % 5
        version = 0
        for _ in range(100):  # a server reset since the last run restarts at version 1: catch up
            version = _server(
                upstream,
                "PUT",
                f"/v1/operator/devices/{device_id}/twin/desired",
                {"values": {"sample_rate_s": rate}},
            )["version"]
            if version > desired.version:
                break
        say(
            f"  the plant sets desired property sample_rate_s={rate} (version {version}) on the server ..."
        )
        deadline = time.monotonic() + 15
        while desired.version < version and time.monotonic() < deadline:
            try:
                desired = updates.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
        say(
            f"  ... and the device's callback receives it: version {desired.version}, values {desired.values}"
        )
        client.update_reported_properties(
            {"sample_rate_s": desired.values.get("sample_rate_s"), "status": "running"}
        )
        deadline = time.monotonic() + 15
        while client.any_pending_reported_properties_updates and time.monotonic() < deadline:
            time.sleep(0.1)
        twin = _server(upstream, "GET", f"/v1/operator/devices/{device_id}/twin")
        say(f"  update_reported_properties(...) reached the server: reported = {twin['reported']}")
        stats = client.stats()
        say(
            f"  store: {stats['forwarded']} forwarded, {stats['pending']} pending, "
            f"drops {stats['drops'] or 'none'}; live events seen {seen + 1}, missed {missed}"
        )
