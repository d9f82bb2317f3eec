"""Does MQTT publishing slow the frame loop? Measured, at 1,000 events/s.

A simulated frame loop (fixed busy work per frame, paced to ``--rate`` frames/s)
runs three times: without publishing (baseline), publishing one event per frame
to a live mosquitto, and publishing while the broker is down (everything goes
to the on-disk outbox). Reported: the time one ``publish_event`` call takes,
how late frames start compared with the pace, and whether every event arrived.

    nice -n 19 .venv/bin/python benchmarks/mqtt_publish.py --rate 1000 --seconds 10

Needs the ``mosquitto`` binary. Writes benchmarks/results/mqtt_publish.json (``--out``) and prints a markdown
table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.contracts.events import PublishContext
from agent.emit import synthetic_event
from agent.mqtt.config import MqttConfig, ReconnectConfig
from agent.mqtt.publisher import MqttPublisher

RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mosquitto(workdir: Path, port: int) -> subprocess.Popen:
    """An anonymous mosquitto on 127.0.0.1:``port`` for the benchmarks (as tests/conftest.py starts one)."""
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None)
    if binary is None:
        raise SystemExit("mosquitto not found: install the Debian package 'mosquitto'")
    conf = workdir / "mosquitto.conf"
    root = "user root\n" if os.geteuid() == 0 else ""  # as root, mosquitto would drop to a user who cannot read tmp
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"max_queued_messages 100000\n{root}")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


class Counter:
    """Counts events arriving at a subscriber and checks their order."""

    def __init__(self, port: int, topic: str) -> None:
        self.count = 0
        self.in_order = True
        self._last = -1
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *a: c.subscribe(topic, 1)
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._ready.wait(10)

    def _on_message(self, client, userdata, msg) -> None:
        frame = json.loads(msg.payload)["frame"]
        if frame <= self._last:
            self.in_order = False
        self._last = frame
        self.count += 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def frame_loop(rate: float, seconds: float, work_s: float, publish=None) -> dict:
    n = int(rate * seconds)
    events = [synthetic_event(i) for i in range(n)]
    calls: list[float] = []
    late: list[float] = []
    t0 = time.perf_counter()
    for i in range(n):
        late.append(time.perf_counter() - (t0 + i / rate))
        busy(work_s)
        if publish is not None:
            c0 = time.perf_counter()
            publish(events[i])
            calls.append(time.perf_counter() - c0)
        delay = t0 + (i + 1) / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.perf_counter() - t0
    out = {"frames": n, "elapsed_s": round(elapsed, 3), "achieved_fps": round(n / elapsed, 1),
           "start_late_ms_p50": round(statistics.median(late) * 1e3, 3),
           "start_late_ms_p99": round(sorted(late)[int(0.99 * n)] * 1e3, 3),
           "start_late_ms_max": round(max(late) * 1e3, 3)}
    if calls:
        s = sorted(calls)
        out.update({"publish_us_mean": round(statistics.fmean(calls) * 1e6, 1),
                    "publish_us_p50": round(s[len(s) // 2] * 1e6, 1),
                    "publish_us_p99": round(s[int(0.99 * len(s))] * 1e6, 1),
                    "publish_us_max": round(s[-1] * 1e6, 1)})
    return out


def make_publisher(port: int, state_dir: Path, device_id: str) -> MqttPublisher:
    cfg = MqttConfig(host="127.0.0.1", port=port, device_id=device_id,
                     reconnect=ReconnectConfig(min_delay_s=0.2, max_delay_s=1.0))
    ctx = PublishContext(device_id=device_id, model_name="bench", model_version="0", backend="none",
                         agent_version="bench")
    return MqttPublisher(cfg, ctx, state_dir)


def wait(pred, timeout: float) -> float:
    t0 = time.monotonic()
    while not pred() and time.monotonic() - t0 < timeout:
        time.sleep(0.01)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--work-ms", type=float, default=0.2, help="simulated per-frame work")
    ap.add_argument("--out", type=Path, default=RESULTS / "mqtt_publish.json", help="JSON results file")
    args = ap.parse_args()
    work = args.work_ms / 1000
    tmp = Path(tempfile.mkdtemp(prefix="fer-mqtt-bench-"))
    port = free_port()
    broker = start_mosquitto(tmp, port)
    results: dict = {"rate": args.rate, "seconds": args.seconds, "work_ms": args.work_ms,
                     "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                     "cpus": os.cpu_count(), "load_avg_1m_before": round(os.getloadavg()[0], 2),
                     "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "python": sys.version.split()[0]}
    try:
        results["baseline"] = frame_loop(args.rate, args.seconds, work)

        counter = Counter(port, "fer/bench-live/events")
        pub = make_publisher(port, tmp / "live", "bench-live")
        pub.start()
        wait(lambda: pub.connected, 10)
        live = frame_loop(args.rate, args.seconds, work, pub.publish_event)
        live["drain_after_loop_s"] = round(wait(lambda: counter.count >= live["frames"], 60), 2)
        live["delivered"], live["in_order"], live["dropped"] = counter.count, counter.in_order, pub.dropped
        pub.close()
        counter.close()
        results["broker_up"] = live

        broker.terminate()
        broker.wait(10)
        pub = make_publisher(port, tmp / "down", "bench-down")
        pub.start()
        down = frame_loop(args.rate, args.seconds, work, pub.publish_event)
        wait(lambda: pub.outbox_depth == 0 or len(pub._queue) == 0, 30)
        down["queued_on_disk"], down["dropped"] = pub.outbox_depth, pub.dropped
        broker = start_mosquitto(tmp, port)
        counter = Counter(port, "fer/bench-down/events")  # may miss the first few re-sent events: counted below
        down["drain_after_reconnect_s"] = round(wait(lambda: pub.outbox_depth == 0, 120), 2)
        down["outbox_after"] = pub.outbox_depth
        pub.close()
        counter.close()
        results["broker_down"] = down
    finally:
        broker.terminate()
        broker.wait(10)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    rows = [("baseline (no publishing)", results["baseline"]), ("broker up", results["broker_up"]),
            ("broker down (outbox)", results["broker_down"])]
    print(f"\n{args.rate:.0f} frames/s for {args.seconds:.0f} s, {args.work_ms} ms simulated work per frame\n")
    print("| run | achieved fps | frame start late p99 / max (ms) | publish_event p50 / p99 / max (µs) |")
    print("|---|---|---|---|")
    for name, r in rows:
        pubcol = (f"{r['publish_us_p50']} / {r['publish_us_p99']} / {r['publish_us_max']}"
                  if "publish_us_p50" in r else "-")
        print(f"| {name} | {r['achieved_fps']} | {r['start_late_ms_p99']} / {r['start_late_ms_max']} | {pubcol} |")
    up, down = results["broker_up"], results["broker_down"]
    print(f"\nbroker up: {up['delivered']}/{up['frames']} delivered, in order: {up['in_order']}, "
          f"dropped {up['dropped']}, drained {up['drain_after_loop_s']} s after the loop")
    print(f"broker down: {down['queued_on_disk']} queued on disk, dropped {down['dropped']}, "
          f"outbox empty {down['drain_after_reconnect_s']} s after the broker came back "
          f"(left: {down['outbox_after']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
