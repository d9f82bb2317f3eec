"""The paho-mqtt client: protocol, TLS, credentials, Last Will, reconnect back-off with jitter.

paho's network thread (``loop_start``) owns the socket and reconnects by
itself; we only choose each wait (paho doubles a fixed delay, we add jitter so
a fleet of boards does not reconnect in lock-step after a broker restart) and
log each failed step once with the broker's reason. Nothing here logs a
password: the broker is always named as ``host:port`` only.
"""

from __future__ import annotations

import logging
import random
import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.contracts.errors import ConfigError
from agent.mqtt.config import MqttConfig
from agent.mqtt.payloads import STATUS_OFFLINE

log = logging.getLogger("agent.mqtt")


class Backoff:
    """Exponential back-off with "equal jitter": a wait in [d/2, d], d doubling up to the maximum."""

    def __init__(self, min_delay: float, max_delay: float, rng: random.Random | None = None) -> None:
        self.min_delay = min_delay
        self.max_delay = max(max_delay, min_delay)
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.max_delay, self.min_delay * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class FerMqttClient(mqtt.Client):
    """paho's client, remembering why the last connect attempt failed.

    paho's reconnect loop swallows the ``OSError`` of a failed attempt (refused,
    unreachable, TLS verification) before calling ``on_connect_fail``; keeping
    it lets the log say *why* ("certificate verify failed", "Connection refused").
    """

    last_error: BaseException | None = None

    def reconnect(self) -> mqtt.MQTTErrorCode:  # type: ignore[override]
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_error = exc
            raise


def _check_file(key: str, value: str | None) -> str | None:
    if value is None:
        return None
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"mqtt.tls.{key}: {path} does not exist")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"mqtt.tls.{key}: cannot read {path}: {exc.strerror}") from None
    return str(path)


def build_client(cfg: MqttConfig, client_id: str, status_topic: str) -> FerMqttClient:
    """A configured, not yet connected client. Raises ``ConfigError`` for unusable TLS files or credentials."""
    protocol = mqtt.MQTTv5 if cfg.protocol == "5" else mqtt.MQTTv311
    client = FerMqttClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                           clean_session=True if protocol == mqtt.MQTTv311 else None)
    client.connect_timeout = cfg.reconnect.connect_timeout_s
    # An unexpected drop (crash, power, network) leaves "offline" retained on the status topic.
    client.will_set(status_topic, STATUS_OFFLINE, qos=1, retain=True)
    if cfg.auth.username:
        client.username_pw_set(cfg.auth.username, cfg.auth.resolve_password())
    if cfg.tls.enabled:
        ca = _check_file("ca_file", cfg.tls.ca_file)
        cert = _check_file("cert_file", cfg.tls.cert_file)
        key = _check_file("key_file", cfg.tls.key_file)
        try:
            client.tls_set(ca_certs=ca, certfile=cert, keyfile=key,
                           cert_reqs=ssl.CERT_REQUIRED if cfg.tls.verify else ssl.CERT_NONE)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"mqtt.tls: cannot load certificates ({ca or 'system CAs'}, {cert or 'no client cert'}): "
                              f"{exc}") from None
        if not cfg.tls.verify:
            client.tls_insecure_set(True)
    return client


def describe_error(exc: BaseException | None) -> str:
    """A short reason for a failed connect attempt, e.g. ``certificate verify failed``."""
    if exc is None:
        return "connection failed"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "connect timed out"
    return exc.strerror or exc.__class__.__name__ if isinstance(exc, OSError) else str(exc)
