"""``mqtt:`` section of the agent configuration.

Field docs (``metadata["doc"]``) are what ``fer-agent print-config`` prints;
``metadata["secret"]`` keeps a value out of print-config and logs. Checks that
need more than a type or a range live in ``__post_init__`` and raise
``ValueError`` naming the key (the config loader adds the file and section).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from agent.contracts.errors import ConfigError

# Characters MQTT and Home Assistant accept in one topic level / node id.
_TOPIC_LEVEL_OK = re.compile(r"^[A-Za-z0-9_.-]+$")
_PREFIX_OK = re.compile(r"^[^#+\s]+$")


@dataclass
class TlsConfig:
    enabled: bool = field(default=False, metadata={"doc": "connect with TLS (usually port 8883)"})
    ca_file: str | None = field(default=None, metadata={
        "doc": "CA certificate(s) (PEM) that signed the broker's certificate; empty = the system CA store"})
    cert_file: str | None = field(default=None, metadata={
        "doc": "client certificate (PEM) for mutual TLS; empty = none"})
    key_file: str | None = field(default=None, metadata={"doc": "private key (PEM) of cert_file"})
    verify: bool = field(default=True, metadata={
        "doc": "verify the broker's certificate and host name (turn off only for a test broker)"})

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file: give both or neither")


@dataclass
class AuthConfig:
    username: str | None = field(default=None, metadata={"doc": "user name; empty = anonymous"})
    password: str | None = field(default=None, repr=False, metadata={
        "doc": "password (prefer password_file or password_env so it is not in this file)", "secret": True})
    password_file: str | None = field(default=None, metadata={
        "doc": "read the password from this file (first line; e.g. a systemd credential)"})
    password_env: str | None = field(default=None, metadata={
        "doc": "read the password from this environment variable, e.g. FER_MQTT_PASSWORD"})

    def __post_init__(self) -> None:
        given = [k for k in ("password", "password_file", "password_env") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"auth: give only one of password, password_file, password_env (got {', '.join(given)})")
        if given and not self.username:
            raise ValueError(f"auth.{given[0]}: a password needs auth.username")

    def resolve_password(self) -> str | None:
        """The password from wherever the config says; a clear error when it cannot be read.

        Called at connect time, not at load time, so a rotated credential file
        is picked up on restart and ``print-config`` never touches the secret.
        """
        if self.password:
            return self.password
        if self.password_file:
            path = Path(self.password_file)
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise ConfigError(f"mqtt.auth.password_file: {path} does not exist") from None
            except OSError as exc:
                raise ConfigError(f"mqtt.auth.password_file: cannot read {path}: {exc.strerror}") from None
            lines = text.splitlines()
            if not lines or not lines[0]:
                raise ConfigError(f"mqtt.auth.password_file: {path} is empty")
            return lines[0]
        if self.password_env:
            value = os.environ.get(self.password_env)
            if not value:
                raise ConfigError(f"mqtt.auth.password_env: environment variable {self.password_env} is not set")
            return value
        return None


@dataclass
class OutboxConfig:
    max_messages: int = field(default=100_000, metadata={
        "doc": "queued events/state kept while the broker is unreachable; beyond this the oldest are dropped",
        "min": 1})
    max_bytes: int = field(default=64 * 1024 * 1024, metadata={
        "doc": "... and at most this many payload bytes on disk", "min": 1024})
    max_age_s: float = field(default=7 * 24 * 3600.0, metadata={
        "doc": "... and drop queued messages older than this (seconds)", "min": 1.0})
    inflight: int = field(default=100, metadata={
        "doc": "messages handed to the broker and not yet acknowledged (QoS 1/2 window)", "min": 1, "max": 65535})
    memory_queue: int = field(default=20_000, metadata={
        "doc": "messages waiting between the frame loop and the disk queue; beyond this the oldest are dropped",
        "min": 100})
    file: str | None = field(default=None, metadata={
        "doc": "SQLite file of the queue (its event journal, <stem>.accepted.<n>, sits next to it); "
               "empty = mqtt-outbox.sqlite3 in the service state directory"})
    drain_timeout_s: float = field(default=5.0, metadata={
        "doc": "on shutdown, keep sending queued messages this long before disconnecting (the rest stay queued)",
        "min": 0.0})


@dataclass
class DiscoveryConfig:
    enabled: bool = field(default=True, metadata={"doc": "publish Home Assistant MQTT discovery configs (retained)"})
    prefix: str = field(default="homeassistant", metadata={"doc": "Home Assistant discovery prefix"})
    device_name: str | None = field(default=None, metadata={
        "doc": "device name shown in Home Assistant; empty = 'FER <device_id>'"})


@dataclass
class ReconnectConfig:
    min_delay_s: float = field(default=1.0, metadata={"doc": "first wait before reconnecting", "min": 0.1})
    max_delay_s: float = field(default=60.0, metadata={"doc": "longest wait (the wait doubles up to this, with jitter)",
                                                       "min": 0.1})
    connect_timeout_s: float = field(default=10.0, metadata={"doc": "give up one TCP/TLS connect attempt after this",
                                                             "min": 0.5})


@dataclass
class MqttConfig:
    host: str | None = field(default=None, metadata={
        "doc": "broker host; empty = embedded broker on 127.0.0.1 (emulation)"})
    port: int = field(default=1883, metadata={"doc": "broker port (8883 is usual for TLS)", "min": 1, "max": 65535})
    prefix: str = field(default="fer", metadata={"doc": "topic prefix: <prefix>/<device_id>/..."})
    device_id: str | None = field(default=None, metadata={
        "doc": "device id in topics and Home Assistant (letters, digits, _ - .); empty = hostname"})
    client_id: str | None = field(default=None, metadata={"doc": "MQTT client id; empty = fer-<device_id>"})
    # str, not Literal: YAML reads `protocol: 5` as an integer, which the loader turns into "5" for a str field.
    protocol: str = field(default="3.1.1", metadata={"doc": "MQTT protocol version: 3.1.1 or 5"})
    qos_events: int = field(default=1, metadata={"doc": "QoS for events (0, 1 or 2)", "min": 0, "max": 2})
    qos_state: int = field(default=1, metadata={"doc": "QoS for retained state (0, 1 or 2)", "min": 0, "max": 2})
    qos_stats: int = field(default=0, metadata={"doc": "QoS for stats (0, 1 or 2)", "min": 0, "max": 2})
    keepalive: int = field(default=30, metadata={"doc": "MQTT keepalive seconds", "min": 5})
    tls: TlsConfig = field(default_factory=TlsConfig, metadata={"doc": "TLS to the broker"})
    auth: AuthConfig = field(default_factory=AuthConfig, metadata={
        "doc": "user name and password (never printed or logged)"})
    outbox: OutboxConfig = field(default_factory=OutboxConfig, metadata={
        "doc": "on-disk queue that keeps events and state while the broker is unreachable"})
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig, metadata={
        "doc": "Home Assistant MQTT discovery"})
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig, metadata={
        "doc": "reconnect back-off (exponential with jitter)"})

    def __post_init__(self) -> None:
        if self.device_id is not None and not _TOPIC_LEVEL_OK.match(self.device_id):
            raise ValueError(f"device_id: {self.device_id!r} may only use letters, digits, '_', '-' and '.'")
        prefix = self.prefix
        if not prefix or not _PREFIX_OK.match(prefix) or prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"prefix: {prefix!r} must be a topic without wildcards, spaces or a leading/trailing '/'")
        if self.protocol not in ("3.1.1", "5"):
            raise ValueError(f"protocol: {self.protocol!r} is not one of 3.1.1, 5")
        for key in ("qos_events", "qos_state", "qos_stats"):
            if getattr(self, key) not in (0, 1, 2):
                raise ValueError(f"{key}: must be 0, 1 or 2")

    def resolved_device_id(self) -> str:
        """The configured device id, or the host name made safe for a topic level."""
        return self.device_id or device_id_from_hostname(socket.gethostname())

    def resolved_client_id(self, device_id: str | None = None) -> str:
        """``client_id``, else ``fer-<device id>`` (``device_id`` when the caller resolved it already)."""
        return self.client_id or f"fer-{device_id or self.resolved_device_id()}"


def device_id_from_hostname(hostname: str) -> str:
    """Host names may hold characters a topic level or HA node id may not."""
    short = hostname.split(".")[0] or "fer-device"
    return re.sub(r"[^A-Za-z0-9_-]", "_", short)
