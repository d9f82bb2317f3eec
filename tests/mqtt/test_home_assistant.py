"""A real Home Assistant against a real mosquitto and the real agent: what a dashboard user gets.

Run by ``make ha-test`` (also in ``.ci/run``), which installs Home Assistant
once into ``~/.cache/fer-agent/ha-<version>`` from the pinned list in
``tests/homeassistant/`` and points ``FER_HA_DIR`` at it; without that this
module is skipped. Home Assistant starts headless on 127.0.0.1 with the MQTT
config entry seeded in ``.storage/core.config_entries``; a user and a token come
from its onboarding API. Checked through the REST API: entity ids, the device
block, options, live states of dominant emotion, face count and the summary
sensors, ``unavailable`` after ``kill -9`` of the agent, and no warning or error
in Home Assistant's log that mentions our entities. The last test breaks one
discovery payload on purpose and shows that the same check then fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import LOOPBACK, MosquittoFactory, free_port

from agent.contracts.events import PublishContext
from agent.contracts.labels import LABELS
from agent.mqtt.discovery import NO_FACE, discovery_configs
from agent.mqtt.topics import Topics

HA_DIR = os.environ.get("FER_HA_DIR")
pytestmark = pytest.mark.skipif(not HA_DIR, reason="needs Home Assistant: run `make ha-test`")
CTX = PublishContext("x", "fer-vgg", "1.3.0", "tflite", "0.1.0")  # only the entity layout is taken from it


def _say(msg: str) -> None:
    print(f"[ha-test] {msg}", file=sys.stderr, flush=True)


class HomeAssistant:
    """``hass`` in a throwaway config directory, on a free loopback port, stopped by pid."""

    def __init__(self, ha_dir: Path, workdir: Path, broker_port: int) -> None:
        self.hass = ha_dir / "bin" / "hass"
        self.config = workdir / "config"
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.broker_port = broker_port
        self.proc: subprocess.Popen | None = None
        self.token = ""
        self.log = self.config / "home-assistant.log"

    def _seed(self) -> None:
        storage = self.config / ".storage"
        storage.mkdir(parents=True)
        (self.config / "configuration.yaml").write_text(yaml.safe_dump({
            "homeassistant": {"name": "fer-test", "latitude": 0, "longitude": 0, "elevation": 0,
                              "unit_system": "metric", "time_zone": "UTC", "currency": "EUR", "country": "DE"},
            "http": {"server_host": LOOPBACK, "server_port": self.port},
            "api": None,
            "logger": {"default": "warning"},
        }))
        entry = {"entry_id": "fe0000000000000000000000000000aa", "version": 1, "minor_version": 1, "domain": "mqtt",
                 "title": f"{LOOPBACK}:{self.broker_port}", "data": {"broker": LOOPBACK, "port": self.broker_port},
                 "options": {}, "pref_disable_new_entities": False, "pref_disable_polling": False, "source": "user",
                 "unique_id": None, "disabled_by": None}
        (storage / "core.config_entries").write_text(json.dumps(
            {"version": 1, "minor_version": 1, "key": "core.config_entries", "data": {"entries": [entry]}}))

    def start(self, timeout: float = 240.0) -> float:
        self._seed()
        t0 = time.monotonic()
        out = (self.config.parent / "hass.out").open("wb")
        # --skip-pip: everything comes from the pinned install; nothing is fetched at run time.
        self.proc = subprocess.Popen([str(self.hass), "-c", str(self.config), "--skip-pip"], stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = t0 + timeout
        while True:  # HTTP answers before all integrations are set up
            self._alive()
            try:
                self.request("/api/onboarding", auth=False)
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Home Assistant did not answer on {self.url} in {timeout} s") from None
                time.sleep(0.5)
        code = self.request("/api/onboarding/users", {"client_id": f"{self.url}/", "name": "fer", "username": "fer",
                                                      "password": "fer-test-password", "language": "en"},
                            auth=False)["auth_code"]
        body = f"grant_type=authorization_code&code={code}&client_id={self.url}/".encode()
        with urllib.request.urlopen(urllib.request.Request(f"{self.url}/auth/token", body), timeout=10) as r:
            self.token = json.load(r)["access_token"]
        while "mqtt" not in self.request("/api/config")["components"]:
            self._alive()
            if time.monotonic() > deadline:
                raise TimeoutError("the MQTT integration did not load (see hass.out)")
            time.sleep(0.5)
        return time.monotonic() - t0

    def _alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"hass exited with {self.proc.returncode}: "
                               + (self.config.parent / "hass.out").read_text(errors="replace")[-3000:])

    def request(self, path: str, body: dict | None = None, auth: bool = True, raw: bool = False):
        req = urllib.request.Request(f"{self.url}{path}", None if body is None else json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
        return text if raw else json.loads(text)

    def states(self) -> dict[str, dict]:
        return {s["entity_id"]: s for s in self.request("/api/states")}

    def template(self, text: str) -> str:
        return self.request("/api/template", {"template": text}, raw=True)

    def log_problems(self, words: list[str]) -> list[str]:
        """WARNING/ERROR lines of HA's log (and the messages continuing them) that name one of ``words``."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        entries, current = [], ""
        for line in text.splitlines():
            if line[:4].isdigit() and current:
                entries.append(current)
                current = ""
            current += line + "\n"
        entries.append(current)
        return [e.strip()[:800] for e in entries if (" WARNING " in e or " ERROR " in e) and any(w in e for w in words)]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    factory = MosquittoFactory(tmp_path_factory)
    yield factory.start()
    factory.close()


@pytest.fixture(scope="module")
def ha(broker, tmp_path_factory):
    home = HomeAssistant(Path(HA_DIR), tmp_path_factory.mktemp("homeassistant"), broker.port)
    try:
        started = home.start()
        _say(f"Home Assistant {home.request('/api/config')['version']} started and onboarded in {started:.1f} s")
        yield home
    finally:
        home.stop()


def expected_entities(device_id: str) -> dict[str, str]:
    """object id -> entity id. The names are chosen so that HA versions that ignore ``default_entity_id``
    (before 2025.10: the id comes from the device name and the entity name) make the same ids."""
    configs = discovery_configs(Topics("fer", device_id), CTX)
    return {cfg["unique_id"].removeprefix(f"fer_{device_id}_"): cfg["default_entity_id"] for cfg in configs.values()}


def check_device(ha: HomeAssistant, device_id: str, *, live: bool) -> list[str]:
    """Everything a dashboard relies on for one board; returns the problems (empty = fine)."""
    problems: list[str] = []
    entities = expected_entities(device_id)
    states = ha.states()
    missing = sorted(e for e in entities.values() if e not in states)
    if missing:
        problems.append(f"entities missing: {missing}")
    some = next((e for e in entities.values() if e in states), None)
    if some is not None:
        device = ha.template(
            "{{ [device_attr(e, 'name'), device_attr(e, 'manufacturer'), device_attr(e, 'model')] | tojson }}"
            "|{{ device_attr(e, 'identifiers') | list | tojson }}|{{ device_entities(device_id(e)) | sort | tojson }}"
            .replace("(e", f"('{some}'")).split("|")
        name, manufacturer, model = json.loads(device[0])
        if (name, manufacturer) != (f"FER {device_id}", "fer-agent") or not model.startswith("fer-"):
            problems.append(f"device block: {name!r} {manufacturer!r} {model!r}")
        if ["mqtt", f"fer_{device_id}"] not in json.loads(device[1]):
            problems.append(f"device identifiers: {device[1]}")
        if sorted(json.loads(device[2])) != sorted(entities.values()):
            problems.append(f"device entities: {device[2]} (expected {sorted(entities.values())})")
    if live and not missing:
        dominant = states[entities["dominant_emotion"]]
        options = dominant["attributes"].get("options")  # HA 2024.3's MQTT sensor does not pass `options` on
        if options is not None and options != [*LABELS, NO_FACE]:
            problems.append(f"options: {options}")
        if dominant["attributes"].get("device_class") != "enum" or dominant["state"] not in LABELS:
            problems.append(f"dominant emotion: {dominant['state']} {dominant['attributes']}")
        if not dominant["attributes"].get("faces"):
            problems.append("dominant emotion has no faces attribute")
        count = states[entities["face_count"]]
        if not count["state"].isdigit() or int(count["state"]) < 1 or \
                count["attributes"].get("state_class") != "measurement":
            problems.append(f"face count: {count['state']} {count['attributes']}")
        shares = [states[entities[f"audience_{label}_share"]] for label in LABELS]
        try:
            total = sum(float(s["state"]) for s in shares)
            mean = float(states[entities["audience_faces_mean"]]["state"])
        except ValueError:
            problems.append(f"summary sensors: {[s['state'] for s in shares]}")
        else:
            if abs(total - 100.0) > 1.0 or mean <= 0:
                problems.append(f"summary: shares add to {total}, mean faces {mean}")
        if any(s["attributes"].get("unit_of_measurement") != "%" or
               s["attributes"].get("state_class") != "measurement" for s in shares):
            problems.append(f"share sensors: {shares[0]['attributes']}")
    problems += [f"Home Assistant log: {line}" for line in ha.log_problems([f"fer_{device_id}", f"fer/{device_id}/"])]
    return problems


def wait_until(what: str, timeout: float, probe) -> float:
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        last = probe()
        if not last:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout} s: {last}")


def _agent(tmp_path: Path, broker, device_id: str) -> subprocess.Popen:
    from agent.synthetic import write_clip

    clip = write_clip(tmp_path / "clip.mp4", seconds=4.0)
    cfg = {"source": {"uri": str(clip), "realtime": True, "loop": True}, "backend": {"type": "tflite"},
           "publish": {"summary_interval_s": 1.0, "state_interval_s": 1.0},
           "mqtt": {"host": broker.host, "port": broker.port, "device_id": device_id},
           "service": {"state_dir": str(tmp_path / "state"), "health_file": str(tmp_path / "health.json")}}
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(cfg))
    return subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(tmp_path / "agent.yaml")],
                            stdout=(tmp_path / "agent.log").open("wb"), stderr=subprocess.STDOUT)


def test_the_agent_in_home_assistant(ha: HomeAssistant, broker, tmp_path: Path) -> None:
    device = "hatest"
    agent = _agent(tmp_path, broker, device)
    try:
        t_live = wait_until("live values in Home Assistant", 120, lambda: check_device(ha, device, live=True))
        _say(f"entities, device block and live values checked {t_live:.1f} s after the agent started")
        states = ha.states()
        for entity in sorted(expected_entities(device).values()):
            _say(f"  {entity} = {states[entity]['state']}")
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(10)
        killed = time.monotonic()
        entities = list(expected_entities(device).values())
        wait_until("every entity unavailable after kill -9", 30, lambda: [
            e for e, s in ha.states().items() if e in entities and s["state"] != "unavailable"])
        _say(f"all {len(entities)} entities unavailable {time.monotonic() - killed:.2f} s after kill -9")
        assert check_device(ha, device, live=False) == []
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)


def test_the_check_fails_on_a_broken_discovery_payload(ha: HomeAssistant, broker) -> None:
    """A test of the test: the face-count config with a misspelt state_class must make the check fail."""
    import paho.mqtt.client as mqtt

    from agent.mqtt.payloads import encode

    device = "habroken"
    topics = Topics("fer", device)
    configs = discovery_configs(topics, PublishContext(device, "fer-vgg", "1.3.0", "tflite", "0.1.0"))
    configs[topics.discovery_face_count]["state_class"] = "measurment"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fer-ha-test-broken")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topics.status, "online", qos=1, retain=True)]
        infos += [client.publish(t, encode(c), qos=1, retain=True) for t, c in configs.items()]
        for info in infos:
            info.wait_for_publish(10)
        wait_until("the other entities", 60, lambda: [e for o, e in expected_entities(device).items()
                                                      if o != "face_count" and e not in ha.states()])
        problems = check_device(ha, device, live=False)
    finally:
        client.loop_stop()
        client.disconnect()
    _say(f"broken discovery payload: the check reports {problems}")
    assert any("entities missing" in p and f"sensor.fer_{device}_face_count" in p for p in problems)
    assert any("Home Assistant log" in p and "state_class" in p for p in problems)
