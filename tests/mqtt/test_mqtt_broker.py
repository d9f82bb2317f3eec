"""The embedded amqtt broker used by ``fer-agent demo``: loopback only, free port, works with the publisher."""

from __future__ import annotations

import socket

import pytest
from conftest import wait_until

from agent.emit import synthetic_event

pytest.importorskip("amqtt")

from agent.mqtt.broker import EmbeddedBroker, broker_config


def _non_loopback_ipv4() -> str | None:
    """This host's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_config_binds_loopback_only() -> None:
    listeners = broker_config()["listeners"]
    assert [listener["bind"] for listener in listeners.values()] == ["127.0.0.1:0"]


def test_embedded_broker_listens_on_loopback_only_and_carries_the_contract(make_publisher, mqtt_collector) -> None:
    with EmbeddedBroker() as (host, port):
        assert host == "127.0.0.1" and port > 0
        with socket.create_connection((host, port), timeout=2):
            pass
        other = _non_loopback_ipv4()
        if other is not None:
            with pytest.raises(OSError):
                socket.create_connection((other, port), timeout=2).close()
        sub = mqtt_collector(host, port, "fer/emb/#")
        pub = make_publisher(host, port, device_id="emb")
        wait_until(lambda: pub.connected, what="connected to the embedded broker")
        for i in range(10):
            pub.publish_event(synthetic_event(i))
        events = sub.wait_count("fer/emb/events", 10)
        assert [m.json()["frame"] for m in events] == list(range(10))
        assert sub.on("fer/emb/status")[0].text == "online"
        pub.close(timeout=2)
        sub.close()


def test_two_embedded_brokers_get_different_ports() -> None:
    with EmbeddedBroker() as (_, p1), EmbeddedBroker() as (_, p2):
        assert p1 != p2
