"""What one ``MqttPublisher.publish_event`` call costs the frame loop, measured in a tight loop.

Since the event journal (``agent/mqtt/journal.py``), each call serialises the
event and writes it to the journal file before it returns, so an accepted
event survives ``kill -9``. This measures the whole call, and its two new
parts, with no outbox thread and no broker (``start()`` is not called), so
nothing but the call itself is timed. Batches of ``--batch`` calls are timed
and the median and best batch reported (per call): on a loaded machine the
median moves, the best much less.

    nice -n 19 .venv/bin/python benchmarks/publish_event_cost.py --calls 50000

Prints a markdown table and writes benchmarks/results/publish_event_cost.json (``--out``). Runs against any
checkout: the journal parts are skipped where there is no journal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from agent.contracts.events import PublishContext
from agent.emit import synthetic_event
from agent.mqtt.config import MqttConfig, OutboxConfig
from agent.mqtt.publisher import MqttPublisher

RESULTS = Path(__file__).resolve().parent / "results"


def per_call_us(fn, items: list, batch: int, between=None) -> dict[str, float]:
    """``between``: untimed work after each batch (what the outbox thread does meanwhile)."""
    means = []
    for start in range(0, len(items) - batch + 1, batch):
        chunk = items[start:start + batch]
        t0 = time.perf_counter()
        for item in chunk:
            fn(item)
        means.append((time.perf_counter() - t0) / batch * 1e6)
        if between is not None:
            between()
    return {"median_us": round(statistics.median(means), 2), "best_us": round(min(means), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=RESULTS / "publish_event_cost.json", help="JSON results file")
    args = ap.parse_args()
    events = [synthetic_event(i) for i in range(args.calls)]
    state = Path(tempfile.mkdtemp(prefix="fer-publish-cost-"))
    cfg = MqttConfig(host="127.0.0.1", port=1, device_id="cost", outbox=OutboxConfig(memory_queue=args.calls + 1))
    ctx = PublishContext(device_id="cost", model_name="bench", model_version="0", backend="none", agent_version="0")
    pub = MqttPublisher(cfg, ctx, state)
    results: dict = {"calls": args.calls, "batch": args.batch,
                     "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpus": os.cpu_count(),
                     "load_avg_1m_before": round(os.getloadavg()[0], 2), "python": sys.version.split()[0],
                     "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    journal = getattr(pub, "_journal", None)
    tend = journal.tend if journal is not None else None  # the outbox thread switches journal segments
    results["publish_event"] = per_call_us(pub.publish_event, events, args.batch, tend)
    if journal is not None:
        from agent.mqtt.journal import event_record

        assert journal.failures == 0, "the journal ran out of room: the measurement would be wrong"
        records = [event_record(e) for e in events]
        results["journal_bytes_per_event"] = round(statistics.fmean(len(r) + 8 for r in records), 1)
        results["event_record"] = per_call_us(event_record, events, args.batch)

        def write(record: bytes) -> None:
            with journal.lock:
                journal.append(record)

        results["journal_append"] = per_call_us(write, records, args.batch, tend)
        assert journal.failures == 0
    pub._queue.clear()  # not sent anywhere: leave nothing to ingest on close
    pub.close(timeout=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{args.calls} calls in batches of {args.batch}, load {results['load_avg_1m_before']} before\n")
    print("| part | median batch (µs per call) | best batch (µs per call) |")
    print("|---|---|---|")
    for part in ("publish_event", "event_record", "journal_append"):
        if part in results:
            print(f"| {part} | {results[part]['median_us']} | {results[part]['best_us']} |")
    if "journal_bytes_per_event" in results:
        print(f"\njournal: {results['journal_bytes_per_event']} bytes per event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
