"""Event latency: frame captured -> event received by a dashboard's MQTT subscriber.

What a dashboard waits for, end to end: the real `fer-agent run` process
(subprocess) plays the demo clip of real faces in real time, detects,
classifies, tracks and publishes through its outbox to a real mosquitto on
127.0.0.1; a paho subscriber records when each event arrives. Latency is
arrival time minus the event's own ``capture_time`` (both from this machine's
clock, so no clock skew). ``tracking.update_interval_s`` is lowered so a short
clip yields many events.

    python benchmarks/event_latency.py [--seconds 20] [--out benchmarks/results]

Writes ``event_latency.json`` and ``event_latency.md``. Needs the `mosquitto`
binary (Debian package) and the emulation extra.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from mqtt_publish import free_port, start_mosquitto  # same folder: one way to start a test broker

from agent.contracts.sysinfo import machine_line
from agent.synthetic import write_clip


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def measure(seconds: float, tmp: Path) -> dict:
    port = free_port()
    broker = start_mosquitto(tmp, port)  # waits until it listens
    arrivals: list[tuple[float, dict]] = []
    lock = threading.Lock()

    def on_message(_c, _u, msg):
        now = time.time()
        with lock:
            arrivals.append((now, json.loads(msg.payload)))

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="latency-bench")
    sub.on_message = on_message
    try:
        sub.connect("127.0.0.1", port)
        sub.subscribe("fer/latency/events", qos=1)
        sub.loop_start()
        clip = write_clip(tmp / "clip.mp4", seconds=seconds)
        cfg = {
            "source": {"uri": str(clip), "realtime": True},
            "tracking": {"update_interval_s": 0.5},
            "mqtt": {"host": "127.0.0.1", "port": port, "device_id": "latency", "discovery": {"enabled": False},
                     "outbox": {"file": str(tmp / "outbox.sqlite3")}},
            "service": {"state_dir": str(tmp), "health_file": str(tmp / "health.json")},
        }
        (tmp / "agent.yaml").write_text(yaml.safe_dump(cfg))
        time.sleep(0.3)  # the subscription is in place before the first event
        run = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(tmp / "agent.yaml"),
                              "--log-level", "warning"], capture_output=True, text=True, timeout=seconds + 60,
                             check=False)
        if run.returncode != 0:
            raise SystemExit(f"fer-agent run exited {run.returncode}: {run.stderr[-2000:]}")
        time.sleep(1.0)
    finally:
        sub.loop_stop()
        sub.disconnect()
        broker.terminate()
        broker.wait(timeout=5)
    ms = []
    for arrived, event in arrivals:
        captured = datetime.fromisoformat(event["capture_time"].replace("Z", "+00:00")).timestamp()
        ms.append((arrived - captured) * 1000.0)
    if not ms:
        raise SystemExit("no events arrived")
    by_type: dict[str, int] = {}
    for _, e in arrivals:
        by_type[e["type"]] = by_type.get(e["type"], 0) + 1
    return {
        "events": len(ms), "by_type": by_type, "clip_seconds": seconds,
        "latency_ms": {"mean": round(statistics.fmean(ms), 1), "p50": round(_pct(ms, 0.5), 1),
                       "p95": round(_pct(ms, 0.95), 1), "max": round(max(ms), 1), "min": round(min(ms), 1)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the real-time clip")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fer-latency-") as tmp:
        result = measure(args.seconds, Path(tmp))
    result["machine"] = f"{machine_line()}, Python {platform.python_version()}"
    result["when"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result["command"] = "python benchmarks/event_latency.py " + " ".join(argv or sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "event_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    lat = result["latency_ms"]
    md = (f"# Event latency ({result['when']})\n\nMachine: {result['machine']}.\n\n"
          f"`fer-agent run` on a {args.seconds:g} s real-time clip of real faces -> mosquitto on 127.0.0.1 -> "
          f"paho subscriber; latency = arrival - event capture_time, {result['events']} events {result['by_type']}.\n\n"
          f"| mean | p50 | p95 | max |\n|---:|---:|---:|---:|\n"
          f"| {lat['mean']} ms | {lat['p50']} ms | {lat['p95']} ms | {lat['max']} ms |\n\n"
          f"Command: `{result['command'].strip()}`\n")
    (args.out / "event_latency.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
