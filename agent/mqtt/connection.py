"""The paho-mqtt client: protocol, TLS, credentials, Last Will, reconnect back-off with jitter.

paho's network thread (``loop_start``) owns the socket and reconnects by
itself; we only choose each wait (paho doubles a fixed delay, we add jitter so
a fleet of boards does not reconnect in lock-step after a broker restart) and
log failed steps with the broker's reason (a long run of the same failure is collapsed,
see :class:`FailureLog`). Nothing here logs a
password: the broker is always named as ``host:port`` only.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from collections.abc import Callable
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


class FailureLog:
    """Logs a run of identical connection failures as the first one, then at growing intervals, with a count.

    A broker that is down for a day at a 60 s back-off would otherwise write
    1,440 identical lines. The 1st, 2nd, 4th, 8th, ... failure of a run is
    logged until those lines are ``max_interval_s`` apart, then one line every
    ``max_interval_s``; each says how many there were and when the next comes.
    A different failure starts a new run and is logged at once. :meth:`succeeded`
    ends the run and returns a note for the "connected" line.
    """

    def __init__(self, logger: logging.Logger, max_interval_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self.max_interval_s = max_interval_s
        self._clock = clock
        self._key: str | None = None
        self.count = 0  # failures in the current run
        self._total = 0  # failures since the last success (over all runs)
        self._since = 0.0
        self._first_failure = 0.0
        self._last_logged = 0.0
        self._hourly = False  # this run is logged once per max_interval_s

    def failed(self, level: int, key: str, retry_in_s: float, attempt: int) -> bool:
        """One failed attempt; ``key`` says what failed (a run is made of equal keys). Returns whether it was logged."""
        now = self._clock()
        if self._total == 0:
            self._first_failure = now
        self._total += 1
        if key != self._key:
            self._key, self.count, self._since, self._hourly = key, 0, now, False
        self.count += 1
        n = self.count
        if n > 1 and now - self._last_logged >= self.max_interval_s:
            self._hourly = True  # powers of two are now further apart than the interval
        elif self._hourly or n & (n - 1):  # not a power of two
            return False
        self._last_logged = now
        run = ""
        if n > 1:
            then = f"in {_duration(self.max_interval_s)}" if self._hourly else \
                f"at the {_ordinal(2 * n)} or after {_duration(self.max_interval_s)}"
            run = f"; {n} times in a row over {_duration(now - self._since)}, next logged {then}"
        self._log.log(level, "MQTT: %s; retrying in %.1f s (attempt %d%s)", key, retry_in_s, attempt, run)
        return True

    def succeeded(self) -> str:
        """The run is over: "" after no failure, else e.g. " after 37 failed attempts over 12 min"."""
        total, self._total, self._key, self.count = self._total, 0, None, 0
        if not total:
            return ""
        attempts = "1 failed attempt" if total == 1 else f"{total} failed attempts"
        return f" after {attempts} over {_duration(self._clock() - self._first_failure)}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


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
