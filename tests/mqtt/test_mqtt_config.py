"""MQTT configuration: defaults from the issue, credentials from config/file/env, clear errors, back-off."""

from __future__ import annotations

import dataclasses
import logging
import random

import pytest

from agent.contracts.errors import ConfigError
from agent.mqtt.config import AuthConfig, MqttConfig, TlsConfig, device_id_from_hostname
from agent.mqtt.connection import Backoff, FailureLog


def test_defaults_follow_the_contract() -> None:
    cfg = MqttConfig()
    assert (cfg.prefix, cfg.qos_events, cfg.qos_state, cfg.qos_stats) == ("fer", 1, 1, 0)
    assert cfg.discovery.prefix == "homeassistant" and cfg.discovery.enabled
    assert cfg.tls.verify is True and cfg.tls.enabled is False
    assert cfg.protocol == "3.1.1"


def test_device_id_defaults_to_a_topic_safe_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "rb5 board+1.local")
    cfg = MqttConfig()
    assert cfg.resolved_device_id() == "rb5_board_1"
    assert cfg.resolved_client_id() == "fer-rb5_board_1"
    assert device_id_from_hostname("") == "fer-device"
    assert MqttConfig(device_id="cam-2").resolved_device_id() == "cam-2"


@pytest.mark.parametrize("kwargs, key", [
    ({"device_id": "a/b"}, "device_id"),
    ({"device_id": "a+"}, "device_id"),
    ({"prefix": "fer/#"}, "prefix"),
    ({"prefix": "/fer"}, "prefix"),
    ({"qos_events": 3}, "qos_events"),
])
def test_bad_values_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        MqttConfig(**kwargs)


def test_secrets_are_marked_for_print_config() -> None:
    secret = {f.name for f in dataclasses.fields(AuthConfig) if f.metadata.get("secret")}
    assert secret == {"password"}
    for cls in (MqttConfig, AuthConfig, TlsConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no doc"


def test_password_from_config_file_and_env(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert AuthConfig(username="u", password="p1").resolve_password() == "p1"
    f = tmp_path / "pw"
    f.write_text("p2\nignored second line\n")
    assert AuthConfig(username="u", password_file=str(f)).resolve_password() == "p2"
    monkeypatch.setenv("FER_MQTT_PASSWORD", "p3")
    assert AuthConfig(username="u", password_env="FER_MQTT_PASSWORD").resolve_password() == "p3"
    assert AuthConfig().resolve_password() is None


def test_missing_password_sources_are_clear_errors(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=r"mqtt\.auth\.password_file: .*nope does not exist"):
        AuthConfig(username="u", password_file=str(missing)).resolve_password()
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        AuthConfig(username="u", password_file=str(empty)).resolve_password()
    unreadable = tmp_path / "dir"
    unreadable.mkdir()
    with pytest.raises(ConfigError, match=r"password_file: cannot read"):
        AuthConfig(username="u", password_file=str(unreadable)).resolve_password()
    monkeypatch.delenv("FER_TEST_NO_SUCH_VAR", raising=False)
    with pytest.raises(ConfigError, match="FER_TEST_NO_SUCH_VAR is not set"):
        AuthConfig(username="u", password_env="FER_TEST_NO_SUCH_VAR").resolve_password()


def test_auth_and_tls_consistency() -> None:
    with pytest.raises(ValueError, match="only one of"):
        AuthConfig(username="u", password="a", password_env="B")
    with pytest.raises(ValueError, match="needs auth.username"):
        AuthConfig(password="a")
    with pytest.raises(ValueError, match="cert_file and tls.key_file"):
        TlsConfig(enabled=True, cert_file="c.pem")


def test_yaml_loader_builds_nested_sections_and_names_keys() -> None:
    config = pytest.importorskip("agent.config")
    cfg = config.parse_config({"mqtt": {"host": "b", "auth": {"username": "u", "password_env": "X"},
                                        "tls": {"enabled": True, "ca_file": "/ca.pem"},
                                        "outbox": {"max_messages": 10}}}, where="agent.yaml")
    assert cfg.mqtt.auth.password_env == "X" and cfg.mqtt.tls.ca_file == "/ca.pem"
    assert cfg.mqtt.outbox.max_messages == 10
    with pytest.raises(ConfigError, match=r"agent\.yaml: mqtt\.auth: .*only one of"):
        config.parse_config({"mqtt": {"auth": {"username": "u", "password": "a", "password_file": "f"}}},
                            where="agent.yaml")
    with pytest.raises(ConfigError, match=r"mqtt\.qos_events"):
        config.parse_config({"mqtt": {"qos_events": 5}}, where="agent.yaml")


def test_backoff_doubles_with_jitter_and_resets() -> None:
    b = Backoff(1.0, 8.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    for d, c in zip(delays, ceilings, strict=True):
        assert c / 2 <= d <= c
    assert len(set(delays)) == len(delays)  # jittered, not lock-step
    b.reset()
    assert b.next_delay() <= 1.0


def test_password_never_appears_in_repr_or_print_config() -> None:
    secret = "hunter2-not-for-logs"
    cfg = MqttConfig(host="b", auth=AuthConfig(username="u", password=secret))
    assert secret not in repr(cfg) and secret not in str(cfg)
    config = pytest.importorskip("agent.config")
    full = config.parse_config({"mqtt": {"host": "b", "auth": {"username": "u", "password": secret}}})
    assert secret not in config.render_config(full)


def test_protocol_accepts_yaml_integer_five() -> None:
    config = pytest.importorskip("agent.config")
    import yaml

    cfg = config.parse_config(yaml.safe_load("mqtt:\n  protocol: 5\n"), where="agent.yaml")
    assert cfg.mqtt.protocol == "5"
    cfg = config.parse_config(yaml.safe_load("mqtt:\n  protocol: 3.1.1\n"), where="agent.yaml")
    assert cfg.mqtt.protocol == "3.1.1"
    with pytest.raises(ConfigError, match=r"agent\.yaml: mqtt\.protocol: '4' is not one of 3\.1\.1, 5"):
        config.parse_config(yaml.safe_load("mqtt:\n  protocol: 4\n"), where="agent.yaml")


def test_a_run_of_the_same_connect_failure_is_logged_at_growing_intervals_with_a_count(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="agent.mqtt")
    now = [1000.0]
    failures = FailureLog(logging.getLogger("agent.mqtt"), max_interval_s=3600.0, clock=lambda: now[0])
    logged = []
    for attempt in range(1, 127):  # a broker down for 126 attempts, 60 s apart
        if failures.failed(logging.WARNING, "cannot connect to b:1883: Connection refused", 60.0, attempt):
            logged.append(attempt)
        now[0] += 60.0
    assert logged == [1, 2, 4, 8, 16, 32, 64, 124]  # powers of two, then an hour after the 64th
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "MQTT: cannot connect to b:1883: Connection refused; retrying in 60.0 s (attempt 1)"
    assert lines[3] == ("MQTT: cannot connect to b:1883: Connection refused; retrying in 60.0 s (attempt 8; 8 times "
                        "in a row over 7 min, next logged at the 16th or after 60 min)")
    assert lines[-1].endswith("(attempt 124; 124 times in a row over 2.0 h, next logged in 60 min)")
    assert len(lines) == 8
    # A different failure is a new run, logged at once; success ends it with a count for the "connected" line.
    assert failures.failed(logging.ERROR, "broker b:1883 refused the connection: Not authorized", 60.0, 127)
    assert caplog.records[-1].levelno == logging.ERROR and caplog.records[-1].getMessage().endswith("(attempt 127)")
    assert failures.succeeded() == " after 127 failed attempts over 2.1 h"
    assert failures.succeeded() == ""
    assert failures.failed(logging.WARNING, "cannot connect to b:1883: Connection refused", 1.0, 1)  # a new run
    assert failures.succeeded() == " after 1 failed attempt over 0 s"


def test_a_day_of_failures_at_the_longest_back_off_is_29_lines_not_1440() -> None:
    now = [0.0]
    failures = FailureLog(logging.getLogger("agent.mqtt.test"), clock=lambda: now[0])
    lines = 0
    for attempt in range(1, 24 * 60 + 1):
        lines += failures.failed(logging.WARNING, "cannot connect to b:1883: Connection refused", 60.0, attempt)
        now[0] += 60.0
    assert lines == 29  # 1, 2, 4, ..., 64 (63 min), then hourly (docs/mqtt.md quotes this)
