"""Shared fixtures: a real mosquitto broker on a free loopback port, and a subscriber that collects messages.

``mosquitto``          - function-scoped broker (anonymous, 127.0.0.1 only); ``.stop()`` / ``.start()``
                         restart it on the same port to simulate an outage.
``mosquitto_factory``  - start brokers with extra listeners (TLS, password file): see ``MosquittoFactory.start``.
``mqtt_collector``     - factory for :class:`MqttCollector` subscribers, closed at teardown.
``tls_material``       - a CA, a server certificate for 127.0.0.1/localhost, generated with the openssl CLI.

All skip with a clear reason when the ``mosquitto`` binary (Debian package ``mosquitto``) is missing.

The test areas (``tests/agent``, ``tests/mqtt``, ``tests/host``, ``tests/deploy``, see ``tests/README.md``) share
these fixtures and import helpers by module name: this directory (``conftest``, ``fer_synth``) and
``stand_ins/`` (``snpe_testing``, ``fake_sdk``) are put on ``sys.path`` here, once.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
for _helpers in (TESTS, TESTS / "stand_ins"):
    if str(_helpers) not in sys.path:
        sys.path.insert(0, str(_helpers))

LOOPBACK = "127.0.0.1"


def _find(binary: str) -> str | None:
    return shutil.which(binary) or next(
        (str(p) for p in (Path("/usr/sbin") / binary, Path("/usr/local/sbin") / binary) if p.exists()), None)


MOSQUITTO = _find("mosquitto")
MOSQUITTO_PASSWD = _find("mosquitto_passwd")


def free_port() -> int:
    """A port nobody listens on right now (the broker binds it moments later; collisions are very unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not listen on {LOOPBACK}:{port} within {timeout} s")


@dataclass
class Mosquitto:
    """A mosquitto process with a generated config. ``port`` is the plain listener (None if it has none)."""

    workdir: Path
    port: int
    extra_listeners: list[str] = field(default_factory=list)  # raw config blocks
    extra_ports: list[int] = field(default_factory=list)
    tls_port: int | None = None  # the TLS listener, when started with tls=
    allow_anonymous: bool = True
    password_file: Path | None = None
    extra_config: list[str] = field(default_factory=list)  # global options, e.g. "max_inflight_messages 10"
    host: str = LOOPBACK
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def _write_config(self) -> None:
        lines = [
            "per_listener_settings false",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            # Persistence keeps retained messages and persistent sessions (clean_session=False collectors)
            # across stop()/start(), like a production broker restart.
            "persistence true",
            f"persistence_location {self.workdir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "max_queued_messages 100000",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto drops to user "mosquitto", who cannot read pytest's 0700 tmp dirs.
            lines.append("user root")
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        lines += self.extra_config
        lines += ["", f"listener {self.port} {LOOPBACK}"]
        for block in self.extra_listeners:
            lines += ["", block]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self._write_config()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config_path)], stdout=log, stderr=log)
        log.close()
        self.starts += 1
        for port in [self.port, *self.extra_ports]:
            _wait_port(port, timeout, self.proc)

    def stop(self) -> None:
        """SIGTERM and wait: clients see the connection drop, the port closes."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class MosquittoFactory:
    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self.brokers: list[Mosquitto] = []

    def start(self, *, allow_anonymous: bool = True, users: dict[str, str] | None = None,
              tls: TlsMaterial | None = None, require_client_cert: bool = False,
              extra_config: list[str] | None = None) -> Mosquitto:
        """A broker with a plain listener on ``.port`` and, with ``tls``, a TLS listener on ``.tls_port``.

        ``users``: name -> password, written with ``mosquitto_passwd`` (so the broker really checks them).
        """
        workdir = self._tmp.mktemp("mosquitto")
        broker = Mosquitto(workdir=workdir, port=free_port(), allow_anonymous=allow_anonymous,
                           extra_config=list(extra_config or []))
        if users:
            if MOSQUITTO_PASSWD is None:
                pytest.skip("mosquitto_passwd not found (Debian package mosquitto)")
            pw = workdir / "passwd"
            pw.touch(mode=0o600)
            for name, password in users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw), name, password], check=True, capture_output=True)
            broker.password_file = pw
        if tls is not None:
            tls_port = free_port()
            block = [f"listener {tls_port} {LOOPBACK}", f"cafile {tls.ca_cert}", f"certfile {tls.server_cert}",
                     f"keyfile {tls.server_key}"]
            if require_client_cert:
                block += ["require_certificate true"]
            broker.extra_listeners.append("\n".join(block))
            broker.extra_ports.append(tls_port)
            broker.tls_port = tls_port
        broker.start()
        self.brokers.append(broker)
        return broker

    def close(self) -> None:
        for b in self.brokers:
            b.stop()


def _require_mosquitto() -> None:
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not found: install the Debian package 'mosquitto' (apt-get install mosquitto)")


@pytest.fixture(scope="session")
def manifest():
    """The committed default bundle's manifest (the agent's fallback model; missing it is a defect, not a skip)."""
    from agent.contracts.manifest import default_bundle_path, load_manifest

    return load_manifest(default_bundle_path())


@pytest.fixture
def mosquitto_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoFactory]:
    _require_mosquitto()
    factory = MosquittoFactory(tmp_path_factory)
    yield factory
    factory.close()


@pytest.fixture
def mosquitto(mosquitto_factory: MosquittoFactory) -> Mosquitto:
    """A fresh anonymous broker on 127.0.0.1:<free port> for one test."""
    return mosquitto_factory.start()


# --------------------------------------------------------------------------- TLS material

@dataclass(frozen=True)
class TlsMaterial:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    other_ca_cert: Path  # a CA that did NOT sign the server certificate
    client_cert: Path  # signed by ca_cert, for mutual TLS
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    """CA + server certificate (SAN 127.0.0.1, localhost) made with the openssl CLI, once per session."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not found")
    d = tmp_path_factory.mktemp("tls")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=fer test {ca}",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.crt", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
             "-out", "server.csr", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                               "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                               "extendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=fer-board", "-keyout", "client.key",
             "-out", "client.csr", cwd=d)
    (d / "client.ext").write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "client.ext", "-out", "client.crt", cwd=d)
    (d / "server.key").chmod(0o644)  # mosquitto may run as another user when started as root
    return TlsMaterial(d / "ca.crt", d / "server.crt", d / "server.key", d / "other-ca.crt",
                       d / "client.crt", d / "client.key")


# --------------------------------------------------------------------------- subscriber helper

@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")


class MqttCollector:
    """A paho subscriber that records every message; ``wait_for`` polls until a predicate holds."""

    def __init__(self, host: str, port: int, topics: str | list[str] = "#", qos: int = 1,
                 client_id: str | None = None, persistent: bool = False, **tls_auth: Any) -> None:
        """``persistent``: clean_session=False, so the broker queues QoS 1 messages for us while we are
        disconnected (and, with broker persistence, across a broker restart). Needs ``client_id``."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._topics = [topics] if isinstance(topics, str) else list(topics)
        self._qos = qos
        if persistent and not client_id:
            raise ValueError("a persistent collector needs a client_id")
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.max_inflight_messages_set(1000)
        if tls_auth.get("username"):
            self.client.username_pw_set(tls_auth["username"], tls_auth.get("password"))
        if tls_auth.get("ca_certs"):
            self.client.tls_set(ca_certs=str(tls_auth["ca_certs"]))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError(f"collector could not subscribe on {host}:{port}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe([(t, self._qos) for t in self._topics])

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos, time.monotonic()))

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, predicate: Callable[[MqttCollector], bool], timeout: float = 10.0,
                 what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.02)
        with self._lock:
            seen = sorted({m.topic for m in self.messages})
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; topics seen: {seen}")

    def wait_count(self, topic: str, n: int, timeout: float = 10.0) -> list[Received]:
        self.wait_for(lambda c: len(c.on(topic)) >= n, timeout, f"{n} message(s) on {topic}")
        return self.on(topic)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def mqtt_collector() -> Iterator[Callable[..., MqttCollector]]:
    """``collector = mqtt_collector(host, port, topics="#")``: subscribed before it returns."""
    made: list[MqttCollector] = []

    def make(host: str, port: int, topics: str | list[str] = "#", **kw: Any) -> MqttCollector:
        c = MqttCollector(host, port, topics, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        try:
            c.close()
        except Exception:
            pass


# --------------------------------------------------------------------------- publisher helper

@pytest.fixture
def make_publisher(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``pub = make_publisher(host, port, device_id="t1", start=True, **MqttConfig fields)``: fast reconnects,
    outbox in the test's tmp dir; every publisher is closed at teardown."""
    from agent.contracts.events import PublishContext
    from agent.mqtt.config import MqttConfig, ReconnectConfig
    from agent.mqtt.publisher import MqttPublisher

    made: list[Any] = []

    def make(host: str, port: int, *, device_id: str = "t1", start: bool = True, state_dir: Path | None = None,
             **fields: Any) -> Any:
        fields.setdefault("reconnect", ReconnectConfig(min_delay_s=0.1, max_delay_s=0.5, connect_timeout_s=2.0))
        cfg = MqttConfig(host=host, port=port, device_id=device_id, **fields)
        ctx = PublishContext(device_id=device_id, model_name="test-model", model_version="1.0.0",
                             backend="tflite", agent_version="0.1.0-test")
        pub = MqttPublisher(cfg, ctx, state_dir or tmp_path / f"state-{device_id}-{len(made)}")
        made.append(pub)
        if start:
            pub.start()
        return pub

    yield make
    for pub in made:
        try:
            pub.close(timeout=0.5)
        except Exception:
            pass


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
