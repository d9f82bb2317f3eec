"""MqttPublisher against a real mosquitto: retained contract, ordering, outbox across an outage, discovery."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time

import jsonschema
import pytest
from conftest import wait_until

from agent.contracts.errors import ConfigError
from agent.contracts.events import StateSnapshot
from agent.emit import synthetic_event, synthetic_state
from agent.mqtt.config import ReconnectConfig
from agent.mqtt.payloads import load_schema
from agent.mqtt.topics import Topics

STATS = {
    "fps": 30.0,
    "frames": 300,
    "dropped_frames": 0,
    "failed_inferences": 0,
    "faces": 1,
    "stages": {"detect": {"mean_ms": 4.0, "p95_ms": 6.5}},
}


def _validator(name: str):
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_late_subscriber_sees_retained_status_state_and_discovery(mosquitto, make_publisher, mqtt_collector) -> None:
    pub = make_publisher(mosquitto.host, mosquitto.port, device_id="late")
    t = Topics("fer", "late")
    wait_until(lambda: pub.connected, what="publisher connected")
    pub.publish_event(synthetic_event(1))
    pub.publish_state(synthetic_state(1))
    pub.publish_state(synthetic_state(2))
    wait_until(lambda: pub.outbox_depth == 0, what="outbox drained")

    late = mqtt_collector(mosquitto.host, mosquitto.port, "#")
    late.wait_for(lambda c: all(c.on(x) for x in (t.status, t.state, *t.discovery_all)), what="retained messages")
    assert [m.text for m in late.on(t.status)] == ["online"]
    assert all(m.retain for m in late.on(t.status) + late.on(t.state)), [
        (m.topic, m.retain, m.text[:60]) for m in late.on(t.status) + late.on(t.state)
    ]
    state = late.on(t.state)[-1].json()
    _validator("state").validate(state)
    assert state["frame"] == 2  # the newest snapshot is the retained one
    for topic in t.discovery_all:
        msg = late.on(topic)[0]
        assert msg.retain
        _validator("ha_sensor").validate(msg.json())
    assert not late.on(t.events), "events must not be retained"


def test_events_stats_arrive_valid_and_in_order_then_clean_offline(mosquitto, make_publisher, mqtt_collector) -> None:
    t = Topics("fer", "ev")
    sub = mqtt_collector(mosquitto.host, mosquitto.port, "fer/#")
    pub = make_publisher(mosquitto.host, mosquitto.port, device_id="ev")
    for i in range(50):
        pub.publish_event(synthetic_event(i))
    wait_until(lambda: pub.connected, what="connected")
    pub.publish_stats(STATS)
    events = sub.wait_count(t.events, 50)
    stats = sub.wait_count(t.stats, 1)
    v = _validator("event")
    payloads = [m.json() for m in events]
    for p in payloads:
        v.validate(p)
    assert [p["frame"] for p in payloads] == list(range(50))
    assert len({p["event_id"] for p in payloads}) == 50
    seqs = [p["seq"] for p in payloads]
    assert seqs == list(range(seqs[0], seqs[0] + 50))
    st = stats[0].json()
    _validator("stats").validate(st)
    assert st["backend"] == "tflite" and st["model"]["version"] == "1.0.0" and st["fps"] == 30.0
    assert "outbox" in st and st["agent_version"] == "0.1.0-test"

    pub.close(timeout=2)
    sub.wait_for(lambda c: [m.text for m in c.on(t.status)][-1:] == ["offline"], what="offline")
    assert [m.text for m in sub.on(t.status)] == ["online", "offline"]
    assert "Client fer-ev disconnected." in mosquitto.log_text()  # a clean DISCONNECT, not the Last Will


def test_events_during_an_outage_are_queued_on_disk_and_delivered_in_order(
    mosquitto, make_publisher, mqtt_collector
) -> None:
    t = Topics("fer", "out")
    sub = mqtt_collector(mosquitto.host, mosquitto.port, "fer/out/events", client_id="collector-out", persistent=True)
    pub = make_publisher(mosquitto.host, mosquitto.port, device_id="out")
    wait_until(lambda: pub.connected, what="connected")
    for i in range(20):
        pub.publish_event(synthetic_event(i))
    sub.wait_count(t.events, 20)
    wait_until(lambda: pub.outbox_depth == 0, what="first 20 acknowledged")

    mosquitto.stop()
    wait_until(lambda: not pub.connected, what="publisher notices the outage")
    for i in range(20, 120):
        pub.publish_event(synthetic_event(i))
    wait_until(lambda: pub.outbox_depth == 100, what="outage events on disk")
    time.sleep(1.0)  # a few failed reconnect attempts
    mosquitto.start()

    sub.wait_for(
        lambda c: {m.json()["frame"] for m in c.on(t.events)} >= set(range(120)), timeout=20, what="all 120 events"
    )
    wait_until(lambda: pub.outbox_depth == 0, what="outbox drained")
    firsts: dict[str, int] = {}
    for m in sub.on(t.events):
        p = m.json()
        firsts.setdefault(p["event_id"], p["frame"])
    assert list(firsts.values()) == list(range(120)), "de-duplicated events must arrive in order"
    assert pub.dropped == 0


def test_publisher_started_while_broker_is_down_catches_up(mosquitto, make_publisher, mqtt_collector) -> None:
    mosquitto.stop()
    pub = make_publisher(mosquitto.host, mosquitto.port, device_id="cold")
    t0 = time.perf_counter()
    for i in range(1000):
        pub.publish_event(synthetic_event(i))
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"1000 publish_event calls with no broker took {elapsed:.2f} s (should never block)"
    assert not pub.connected
    mosquitto.start()
    sub = mqtt_collector(mosquitto.host, mosquitto.port, "fer/cold/#", client_id="collector-cold")
    # The collector may subscribe after the publisher reconnected: the retained state + delivered count tell.
    wait_until(lambda: pub.outbox_depth == 0 and pub.connected, timeout=20, what="outbox drained after start")
    assert pub.dropped == 0
    sub.wait_for(lambda c: c.on("fer/cold/status"), what="retained status")
    assert sub.on("fer/cold/status")[-1].text == "online"


def test_a_long_connect_failure_run_is_collapsed_and_the_connected_line_counts_it(
    mosquitto, make_publisher, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="agent.mqtt")
    mosquitto.stop()
    pub = make_publisher(
        mosquitto.host,
        mosquitto.port,
        device_id="flaky",
        reconnect=ReconnectConfig(min_delay_s=0.1, max_delay_s=0.1, connect_timeout_s=2.0),
    )
    wait_until(lambda: any("attempt 8;" in r.getMessage() for r in caplog.records), timeout=20, what="8 attempts")
    mosquitto.start()
    wait_until(lambda: pub.connected, timeout=20, what="connected")
    fails = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
    attempts = [int(re.search(r"\(attempt (\d+)", m).group(1)) for m in fails]
    assert attempts[:4] == [1, 2, 4, 8] and attempts == [2**i for i in range(len(attempts))], fails
    assert "8 times in a row over" in fails[3] and "next logged at the 16th" in fails[3]
    connected = [r.getMessage() for r in caplog.records if "MQTT: connected to" in r.getMessage()]
    assert re.fullmatch(
        rf"MQTT: connected to {mosquitto.host}:{mosquitto.port} after \d+ failed attempts over \d+ s", connected[-1]
    ), connected


def test_restarted_home_assistant_gets_discovery_again(mosquitto, make_publisher, mqtt_collector) -> None:
    t = Topics("fer", "ha")
    pub = make_publisher(mosquitto.host, mosquitto.port, device_id="ha")
    wait_until(lambda: pub.connected, what="connected")
    time.sleep(0.3)  # let the HA-birth subscription settle
    sub = mqtt_collector(mosquitto.host, mosquitto.port, t.discovery_dominant)
    sub.wait_count(t.discovery_dominant, 1)  # retained copy
    sub.client.publish(t.ha_birth, "online").wait_for_publish(5)
    fresh = sub.wait_count(t.discovery_dominant, 2)
    assert not fresh[-1].retain  # a live re-publish, not the retained copy
    assert json.loads(fresh[-1].payload)["unique_id"] == "fer_ha_dominant_emotion"


def test_a_backend_change_swaps_the_frozen_context_for_payloads_and_discovery(
    mosquitto, make_publisher, mqtt_collector
) -> None:
    t = Topics("fer", "sw")
    pub = make_publisher(mosquitto.host, mosquitto.port, device_id="sw")
    with pytest.raises(dataclasses.FrozenInstanceError):
        pub.ctx.backend = "snpe"  # nobody edits the context in place
    with pytest.raises(TypeError):
        pub.ctx.extra["backend_reason"] = "x"
    wait_until(lambda: pub.connected, what="connected")
    sub = mqtt_collector(mosquitto.host, mosquitto.port, [t.events, t.discovery_dominant])
    sub.wait_count(t.discovery_dominant, 1)  # retained copy naming tflite
    pub.backend_changed("cpu-fallback", "fallback: qnn failed 2 consecutive frames", "cpu detail")
    pub.publish_event(synthetic_event(1))
    (event,) = sub.wait_count(t.events, 1)
    assert event.json()["backend"] == "cpu-fallback"
    fresh = sub.wait_count(t.discovery_dominant, 2)
    assert "(cpu-fallback)" in fresh[-1].json()["device"]["model"]
    assert dict(pub.ctx.extra) == {"backend_reason": "fallback: qnn failed 2 consecutive frames",
                                   "backend_detail": "cpu detail"}


def test_the_device_id_comes_from_the_context_only(make_publisher, tmp_path) -> None:
    """The runner resolves the device id once; the publisher neither derives it again nor fills in a blank one."""
    from agent.contracts.events import PublishContext
    from agent.mqtt.config import MqttConfig
    from agent.mqtt.publisher import MqttPublisher

    cfg = MqttConfig(host="localhost", device_id=None)
    ctx = PublishContext(device_id="from-runner", model_name="m", model_version="1", backend="tflite",
                         agent_version="0")
    pub = MqttPublisher(cfg, ctx, tmp_path / "a")
    assert pub.ctx is ctx and pub.topics.base == "fer/from-runner" and pub.client_id == "fer-from-runner"
    pub.close(timeout=0)
    with pytest.raises(ValueError, match="device_id is empty"):
        MqttPublisher(cfg, dataclasses.replace(ctx, device_id=""), tmp_path / "b")


def test_a_flood_of_home_assistant_births_is_answered_by_one_discovery_per_few_seconds(
        mosquitto, make_publisher, mqtt_collector, caplog) -> None:
    caplog.set_level(logging.INFO, logger="agent.mqtt")
    t = Topics("fer", "haf")
    pub = make_publisher(mosquitto.host, mosquitto.port, device_id="haf")
    wait_until(lambda: pub.connected, what="connected")
    time.sleep(0.3)  # let the HA-birth subscription settle
    sub = mqtt_collector(mosquitto.host, mosquitto.port, t.discovery_dominant)
    sub.wait_count(t.discovery_dominant, 1)  # retained copy
    for _ in range(500):
        sub.client.publish(t.ha_birth, "online")
    sub.wait_count(t.discovery_dominant, 2)  # the first birth is answered at once
    time.sleep(6.0)  # ... and the rest of the flood by at most one more, a few seconds later
    assert 2 <= len(sub.on(t.discovery_dominant)) <= 3
    assert caplog.text.count("Home Assistant came online") <= 2


def test_state_is_coalesced_while_offline(mosquitto, make_publisher, mqtt_collector) -> None:
    mosquitto.stop()
    pub = make_publisher(mosquitto.host, mosquitto.port, device_id="coal")
    for i in range(200):
        pub.publish_state(synthetic_state(i))
        if i % 20 == 0:
            time.sleep(0.01)
    pub.publish_state(StateSnapshot(faces=[], dominant=None, frame_number=999, capture_time=time.time()))
    wait_until(lambda: len(pub._queue) == 0, what="queued to disk")
    assert pub.outbox_depth == 1, "only the newest unsent state snapshot is worth keeping"
    mosquitto.start()
    wait_until(lambda: pub.connected and pub.outbox_depth == 0, timeout=20, what="drained")
    late = mqtt_collector(mosquitto.host, mosquitto.port, "fer/coal/state")
    msg = late.wait_count("fer/coal/state", 1)[0]
    assert msg.retain and msg.json()["frame"] == 999 and msg.json()["dominant"] is None


def test_start_without_host_is_a_clear_config_error(make_publisher) -> None:
    pub = make_publisher(None, 1883, device_id="nohost", start=False)
    with pytest.raises(ConfigError, match="mqtt.host"):
        pub.start()


def test_outbox_limit_drops_oldest_and_reports_it_in_stats(mosquitto, make_publisher, mqtt_collector) -> None:
    from agent.mqtt.config import OutboxConfig

    mosquitto.stop()
    pub = make_publisher(mosquitto.host, mosquitto.port, device_id="full", outbox=OutboxConfig(max_messages=10))
    for i in range(30):
        pub.publish_event(synthetic_event(i))
    wait_until(lambda: pub.dropped == 20, what="20 oldest dropped")
    mosquitto.start()
    sub = mqtt_collector(mosquitto.host, mosquitto.port, "fer/full/stats")
    wait_until(lambda: pub.connected, timeout=20, what="reconnected")
    pub.publish_stats(STATS)  # stats are QoS 0 and not retained: send once the collector listens
    stats = sub.wait_count("fer/full/stats", 1, timeout=20)[-1].json()
    assert stats["outbox"]["dropped"] == 20


def test_unencodable_event_is_dropped_and_counted_not_fatal(mosquitto, make_publisher, mqtt_collector) -> None:
    import dataclasses

    sub = mqtt_collector(mosquitto.host, mosquitto.port, "fer/nan/events")
    pub = make_publisher(mosquitto.host, mosquitto.port, device_id="nan")
    good = synthetic_event(1)
    bad = dataclasses.replace(good, face=dataclasses.replace(good.face, confidence=float("nan")))
    pub.publish_event(synthetic_event(0))
    pub.publish_event(bad)
    pub.publish_event(synthetic_event(2))
    events = sub.wait_count("fer/nan/events", 2)
    time.sleep(0.3)
    assert [m.json()["frame"] for m in sub.on("fer/nan/events")] == [0, 2]
    seqs = [m.json()["seq"] for m in events]
    assert seqs[1] == seqs[0] + 1, "a dropped event must not burn a sequence number"
    assert pub.dropped == 1


def test_mqtt5_protocol_and_double_close(mosquitto, make_publisher, mqtt_collector) -> None:
    sub = mqtt_collector(mosquitto.host, mosquitto.port, "fer/v5/#")
    pub = make_publisher(mosquitto.host, mosquitto.port, device_id="v5", protocol="5")
    wait_until(lambda: pub.connected, what="MQTT 5 connection")
    pub.publish_event(synthetic_event(3))
    assert sub.wait_count("fer/v5/events", 1)[0].json()["frame"] == 3
    assert "fer-v5 (p5," in mosquitto.log_text()  # mosquitto logs the protocol level it accepted
    pub.close(timeout=1)
    pub.close(timeout=1)
    sub.wait_for(lambda c: [m.text for m in c.on("fer/v5/status")][-1:] == ["offline"], what="offline")


def test_close_without_start_keeps_events_for_the_next_run(make_publisher, tmp_path) -> None:
    state = tmp_path / "shared-state"
    pub = make_publisher("127.0.0.1", 1, device_id="nostart", start=False, state_dir=state)
    for i in range(3):
        pub.publish_event(synthetic_event(i))
    pub.close(timeout=0)
    again = make_publisher("127.0.0.1", 1, device_id="nostart", start=False, state_dir=state)
    assert again.outbox_depth == 3


def test_memory_queue_overflow_drops_oldest_and_counts(make_publisher) -> None:
    from agent.mqtt.config import OutboxConfig

    pub = make_publisher("127.0.0.1", 1, device_id="overflow", start=False, outbox=OutboxConfig(memory_queue=100))
    for i in range(150):  # no outbox thread is running: everything stays in memory
        pub.publish_event(synthetic_event(i))
    assert pub.dropped == 50 and pub.outbox_depth == 100
    assert [e.frame_number for _, e, _ in list(pub._queue)[:1]] == [50]  # the oldest went


def test_mqtt5_burst_respects_the_brokers_receive_maximum(mosquitto_factory, make_publisher, mqtt_collector) -> None:
    broker = mosquitto_factory.start(extra_config=["max_inflight_messages 10"])  # CONNACK Receive Maximum = 10
    sub = mqtt_collector(broker.host, broker.port, "fer/v5burst/events")
    pub = make_publisher(broker.host, broker.port, device_id="v5burst", protocol="5")
    wait_until(lambda: pub.connected, what="MQTT 5 connection")
    assert pub._window == 10 - 4, "outbox window sized from CONNACK Receive Maximum (room for status/discovery)"
    for i in range(300):
        pub.publish_event(synthetic_event(i))
    events = sub.wait_count("fer/v5burst/events", 300, timeout=30)
    assert [m.json()["frame"] for m in events] == list(range(300))
    assert broker.log_text().count("New client connected from 127.0.0.1") == 2, "no forced reconnects"


def test_an_error_in_a_callback_does_not_stop_publishing(
    mosquitto, make_publisher, mqtt_collector, monkeypatch, caplog
) -> None:
    import agent.mqtt.publisher as publisher_module

    def broken(*args, **kwargs):
        raise RuntimeError("discovery exploded")

    monkeypatch.setattr(publisher_module, "discovery_messages", broken)
    sub = mqtt_collector(mosquitto.host, mosquitto.port, "fer/cb/#")
    pub = make_publisher(mosquitto.host, mosquitto.port, device_id="cb")
    pub.publish_event(synthetic_event(1))
    assert sub.wait_count("fer/cb/events", 1)[0].json()["frame"] == 1
    assert sub.on("fer/cb/status")[0].text == "online"
    assert "discovery exploded" in caplog.text
    mosquitto.stop()
    wait_until(lambda: not pub.connected, what="outage noticed")
    mosquitto.start()  # paho's network thread survived the exception: it reconnects
    wait_until(lambda: pub.connected, timeout=15, what="reconnect after the callback error")


def test_an_event_wakes_an_idle_outbox_thread_but_state_does_not(make_publisher) -> None:
    """Sparse events must not wait out the idle poll; busy periods keep batching without wake-ups."""
    pub = make_publisher("127.0.0.1", 1, device_id="wake", start=False)
    pub._idle = True
    pub.publish_state(synthetic_state(1))
    assert not pub._wake.is_set()
    pub.publish_event(synthetic_event(1))
    assert pub._wake.is_set() and not pub._idle
    pub._wake.clear()
    pub.publish_event(synthetic_event(2))  # not idle (busy): no hand-over per event
    assert not pub._wake.is_set()
