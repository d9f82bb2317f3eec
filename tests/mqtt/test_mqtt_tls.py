"""TLS + password auth against mosquitto: right credentials connect; wrong ones give a clear, secret-free,
retried error and no crash."""

from __future__ import annotations

import logging
import re
import time

import pytest
from conftest import wait_until

from agent.contracts.errors import ConfigError
from agent.emit import synthetic_event
from agent.mqtt.config import AuthConfig, TlsConfig

SECRET = "s3cr3t-Pa55word"


@pytest.fixture
def secure_broker(mosquitto_factory, tls_material):
    return mosquitto_factory.start(allow_anonymous=False, users={"agent": SECRET}, tls=tls_material)


def test_tls_with_password_file_connects_and_delivers(secure_broker, tls_material, make_publisher, mqtt_collector,
                                                      tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    pw = tmp_path / "mqtt-password"
    pw.write_text(SECRET + "\n")
    pub = make_publisher(secure_broker.host, secure_broker.tls_port, device_id="tls1",
                         tls=TlsConfig(enabled=True, ca_file=str(tls_material.ca_cert)),
                         auth=AuthConfig(username="agent", password_file=str(pw)))
    sub = mqtt_collector(secure_broker.host, secure_broker.tls_port, "fer/tls1/#", username="agent",
                         password=SECRET, ca_certs=tls_material.ca_cert)
    wait_until(lambda: pub.connected, what="TLS connection")
    pub.publish_event(synthetic_event(7))
    msg = sub.wait_count("fer/tls1/events", 1)[0]
    assert msg.json()["frame"] == 7
    assert SECRET not in caplog.text


def test_password_from_environment(secure_broker, tls_material, make_publisher, monkeypatch) -> None:
    monkeypatch.setenv("FER_MQTT_PASSWORD", SECRET)
    pub = make_publisher(secure_broker.host, secure_broker.tls_port, device_id="tls-env",
                         tls=TlsConfig(enabled=True, ca_file=str(tls_material.ca_cert)),
                         auth=AuthConfig(username="agent", password_env="FER_MQTT_PASSWORD"))
    wait_until(lambda: pub.connected, what="TLS connection with password from env")


def test_wrong_password_is_reported_retried_and_never_logged(secure_broker, tls_material, make_publisher,
                                                             caplog) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + SECRET
    pub = make_publisher(secure_broker.host, secure_broker.tls_port, device_id="tls-bad",
                         tls=TlsConfig(enabled=True, ca_file=str(tls_material.ca_cert)),
                         auth=AuthConfig(username="agent", password=wrong))
    for i in range(5):
        pub.publish_event(synthetic_event(i))  # the frame loop keeps going
    wait_until(lambda: len(_refusals(caplog)) >= 3, timeout=15, what="three refused attempts")
    assert not pub.connected
    refusals = _refusals(caplog)
    assert "not authori" in refusals[0].lower() or "bad user name or password" in refusals[0].lower()
    attempts = [int(re.search(r"\(attempt (\d+)", r).group(1)) for r in refusals]
    assert attempts == [1, 2, 4][:len(attempts)], "the same failure: logged at the 1st, 2nd, 4th, ... attempt"
    assert wrong not in caplog.text and SECRET not in caplog.text
    wait_until(lambda: pub.outbox_depth == 5, what="events kept on disk")


def _refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]


def test_untrusted_server_certificate_is_a_clear_error(secure_broker, tls_material, make_publisher, caplog) -> None:
    caplog.set_level(logging.WARNING)
    pub = make_publisher(secure_broker.host, secure_broker.tls_port, device_id="tls-ca",
                         tls=TlsConfig(enabled=True, ca_file=str(tls_material.other_ca_cert)),
                         auth=AuthConfig(username="agent", password=SECRET))
    wait_until(lambda: any("certificate verification failed" in r.getMessage() for r in caplog.records),
               what="TLS verification error logged")
    assert not pub.connected and SECRET not in caplog.text


def test_missing_ca_file_fails_at_start_naming_the_key(make_publisher, tmp_path) -> None:
    pub = make_publisher("127.0.0.1", 8883, device_id="tls-miss", start=False,
                         tls=TlsConfig(enabled=True, ca_file=str(tmp_path / "ca.pem")))
    with pytest.raises(ConfigError, match=r"mqtt\.tls\.ca_file: .*ca\.pem does not exist"):
        pub.start()


def test_missing_password_file_fails_at_start_naming_key_and_file(make_publisher, tmp_path) -> None:
    pub = make_publisher("127.0.0.1", 1883, device_id="pw-miss", start=False,
                         auth=AuthConfig(username="agent", password_file=str(tmp_path / "gone")))
    with pytest.raises(ConfigError, match=r"mqtt\.auth\.password_file: .*gone does not exist"):
        pub.start()


def test_plain_listener_rejects_anonymous_and_publisher_survives(secure_broker, make_publisher, caplog) -> None:
    caplog.set_level(logging.WARNING)
    pub = make_publisher(secure_broker.host, secure_broker.port, device_id="anon")
    wait_until(lambda: _refusals(caplog), what="anonymous refused")
    time.sleep(0.3)
    assert not pub.connected


def test_mutual_tls_with_client_certificate(mosquitto_factory, tls_material, make_publisher, mqtt_collector) -> None:
    broker = mosquitto_factory.start(allow_anonymous=True, tls=tls_material, require_client_cert=True)
    sub = mqtt_collector(broker.host, broker.port, "fer/mtls/events")
    pub = make_publisher(broker.host, broker.tls_port, device_id="mtls",
                         tls=TlsConfig(enabled=True, ca_file=str(tls_material.ca_cert),
                                       cert_file=str(tls_material.client_cert), key_file=str(tls_material.client_key)))
    wait_until(lambda: pub.connected, what="mutual TLS connection")
    pub.publish_event(synthetic_event(1))
    assert sub.wait_count("fer/mtls/events", 1)[0].json()["frame"] == 1


def test_client_certificate_required_but_missing_does_not_connect(mosquitto_factory, tls_material, make_publisher,
                                                                  caplog) -> None:
    caplog.set_level(logging.WARNING)
    broker = mosquitto_factory.start(allow_anonymous=True, tls=tls_material, require_client_cert=True)
    pub = make_publisher(broker.host, broker.tls_port, device_id="mtls-no",
                         tls=TlsConfig(enabled=True, ca_file=str(tls_material.ca_cert)))
    wait_until(lambda: any("MQTT:" in r.getMessage() and "attempt 2" in r.getMessage() for r in caplog.records),
               what="two failed attempts")
    assert not pub.connected


def test_verify_off_accepts_an_unknown_ca(secure_broker, tls_material, make_publisher) -> None:
    pub = make_publisher(secure_broker.host, secure_broker.tls_port, device_id="tls-noverify",
                         tls=TlsConfig(enabled=True, ca_file=str(tls_material.other_ca_cert), verify=False),
                         auth=AuthConfig(username="agent", password=SECRET))
    wait_until(lambda: pub.connected, what="connection without verification")
