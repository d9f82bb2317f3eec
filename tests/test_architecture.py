"""The structure the code promises: plugins are one file, contracts stand alone, data flows one way."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNTIME_MODULES = ("agent.runtimes", "agent.config", "agent.mqtt", "agent.pipeline", "agent.service",
                   "agent.detectors", "agent.runner", "agent.health", "agent.observers", "agent.classify")


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.fixture
def forget():
    """Unregister the throwaway plugins afterwards, so no other test sees them."""
    from agent.detectors import DETECTORS
    from agent.runtimes import RUNTIMES

    yield
    for reg, name in ((RUNTIMES, "echo"), (DETECTORS, "centre")):
        reg._classes.pop(name, None)
    for mod in ("fer_echo_runtime", "fer_centre_detector"):
        sys.modules.pop(mod, None)


ECHO = '''
from dataclasses import dataclass, field

import numpy as np

from agent.runtimes.base import Runtime


@dataclass
class EchoConfig:
    score: float = field(default=0.25, metadata={"doc": "the score every label gets", "min": 0.0})


MADE = []


class EchoRuntime(Runtime):
    name = "echo"
    config_class = EchoConfig
    summary = "a throwaway runtime for the architecture test"

    def __init__(self, model, config=None, state_dir=None):
        super().__init__(model, config, state_dir)
        MADE.append(self)

    def run(self, batch):
        return [np.full((len(batch), 7), self.config.score, np.float32)]
'''

CENTRE = '''
from dataclasses import dataclass, field

from agent.contracts.preprocess import Box
from agent.detectors import Detection, Detector


@dataclass
class CentreConfig:
    side: float = field(default=0.5, metadata={"doc": "the face's share of the frame", "min": 0.1, "max": 1.0})


class CentreDetector(Detector):
    name = "centre"
    summary = "one face in the middle of every frame"
    config_class = CentreConfig

    def detect(self, frame, grey):
        h, w = frame.shape[:2]
        fw, fh = int(w * self.options.side), int(h * self.options.side)
        return self._finish([Detection(Box((w - fw) // 2, (h - fh) // 2, fw, fh), 1.0)], w, h)
'''


def test_a_new_runtime_is_one_module(plugin_dir, forget, manifest):
    from agent.classify import FaceClassifier
    from agent.cli import build_parser
    from agent.config import parse_config, render_config
    from agent.contracts.errors import ConfigError
    from agent.runtimes import create_runtime

    (plugin_dir / "fer_echo_runtime.py").write_text(textwrap.dedent(ECHO))
    __import__("fer_echo_runtime")  # the whole change: a module that declares name, config class and class
    cfg = parse_config({"backend": {"type": "echo", "echo": {"score": 0.5}}})
    assert cfg.backend.echo.score == 0.5
    with pytest.raises(ConfigError, match=r"backend.echo.score: -1.0 is below the minimum 0.0"):
        parse_config({"backend": {"echo": {"score": -1}}})
    with pytest.raises(ConfigError, match=r"backend.type: 'nope' is not one of auto, echo, qnn, snpe, tflite"):
        parse_config({"backend": {"type": "nope"}})
    with pytest.raises(ConfigError, match=r"backend.snpe.fallback: 'nope' is not one of none, echo, qnn, snpe, tflite"):
        parse_config({"backend": {"snpe": {"fallback": "nope"}}})
    text = render_config(cfg)
    assert "  echo:\n    # the score every label gets\n    score: 0.5" in text
    assert "echo = a throwaway runtime for the architecture test" in text
    run_help = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert "auto, echo, qnn, snpe or tflite" in " ".join(run_help.split())
    clf = FaceClassifier(manifest, create_runtime(cfg.backend, FaceClassifier.model(manifest)).runtime)
    assert clf.name == "echo" and clf.infer(__import__("numpy").zeros((2, 48, 48, 1), "float32"))[1, 3] == 0.5


def test_the_runner_hands_runtimes_the_state_directory(plugin_dir, forget, tmp_path):
    """Runtimes get service.state_dir resolved (QNN keeps compiled contexts there); none reaches for it."""
    import cv2
    import numpy as np

    from agent.config import AgentConfig
    from agent.pipeline import NullPublisher
    from agent.runner import run_agent

    (plugin_dir / "fer_echo_runtime.py").write_text(textwrap.dedent(ECHO))
    echo = __import__("fer_echo_runtime")
    cv2.imwrite(str(tmp_path / "empty.png"), np.zeros((480, 640, 3), np.uint8))
    cfg = AgentConfig()
    cfg.source.uri = str(tmp_path / "empty.png")
    cfg.backend.type, cfg.detector.type = "echo", "haar"
    cfg.mqtt.host = "localhost"  # NullPublisher: nothing connects
    cfg.service.state_dir, cfg.service.health_file = str(tmp_path / "state"), str(tmp_path / "health.json")
    assert run_agent(cfg, publisher_factory=lambda cfg, ctx: NullPublisher()).frames == 1
    assert [r.state_dir for r in echo.MADE] == [tmp_path / "state"]


def test_a_new_detector_is_one_module(plugin_dir, forget, manifest):
    import numpy as np

    from agent.cli import build_parser
    from agent.config import parse_config, render_config
    from agent.contracts.errors import ConfigError
    from agent.detectors import create_detector

    (plugin_dir / "fer_centre_detector.py").write_text(textwrap.dedent(CENTRE))
    __import__("fer_centre_detector")  # the whole change: a module with its options section and its class
    cfg = parse_config({"detector": {"type": "centre", "centre": {"side": 0.5}}})
    with pytest.raises(ConfigError, match=r"detector.centre.side: 2.0 is above the maximum 1.0"):
        parse_config({"detector": {"centre": {"side": 2.0}}})
    with pytest.raises(ConfigError, match=r"detector.type: 'nope' is not one of blazeface, centre, haar, yunet"):
        parse_config({"detector": {"type": "nope"}})
    text = render_config(cfg)
    assert "centre = one face in the middle of every frame" in text
    assert "  # detector.type: centre (one face in the middle of every frame)\n  centre:\n" \
           "    # the face's share of the frame\n    side: 0.5" in text
    run_help = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert "blazeface, centre, haar or yunet" in " ".join(run_help.split())
    frame = np.zeros((480, 640, 3), np.uint8)
    (det,) = create_detector(cfg.detector, manifest, cfg.backend).detect(frame, frame[:, :, 0])
    assert (det.box.w, det.box.h) == (320, 240)


def test_dropping_a_file_into_the_package_is_enough(tmp_path, monkeypatch):
    """Registry discovery imports every module of the plugin package: no list to edit."""
    pkg = tmp_path / "fer_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from agent.registry import Plugin, Registry
        REG = Registry("fer_plugins", "plugin")
        class Base(Plugin):
            registry = REG
    '''))
    (pkg / "alpha.py").write_text("from fer_plugins import Base\n\nclass Alpha(Base):\n    name = 'alpha'\n")
    (pkg / "_private.py").write_text("raise RuntimeError('modules starting with _ are not plugins')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from fer_plugins import REG  # type: ignore[import-not-found]

    assert REG.names() == ("alpha",)
    sys.modules.pop("fer_plugins", None)
    sys.modules.pop("fer_plugins.alpha", None)


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow
def test_host_tools_import_only_the_contracts():
    """Importing every host_tools module loads none of the board's runtime."""
    out = _run(f'''
        import importlib, pkgutil, sys
        import host_tools
        for m in pkgutil.iter_modules(host_tools.__path__):
            importlib.import_module("host_tools." + m.name)
        bad = sorted(n for n in sys.modules if n.startswith({RUNTIME_MODULES!r}))
        print("LOADED", bad)
    ''')
    assert "LOADED []" in out, out


def test_a_pipeline_run_loads_neither_tensorflow_nor_host_tools(tmp_path):
    import cv2

    from agent.synthetic import grid_frame

    cv2.imwrite(str(tmp_path / "face.png"), grid_frame(1))
    out = _run(f'''
        import sys
        from agent.config import AgentConfig
        from agent.pipeline import NullPublisher
        from agent.runner import run_agent
        cfg = AgentConfig()
        cfg.source.uri = {str(tmp_path / "face.png")!r}
        cfg.backend.type = "tflite"
        cfg.mqtt.host = "localhost"  # NullPublisher: nothing connects
        cfg.service.health_file = {str(tmp_path / "health.json")!r}
        summary = run_agent(cfg, publisher_factory=lambda cfg, ctx: NullPublisher())
        print("FRAMES", summary.frames)
        print("LOADED", sorted(n for n in sys.modules if n.split(".")[0] in ("tensorflow", "host_tools", "keras")))
    ''')
    assert "FRAMES 1" in out and "LOADED []" in out, out


def _module_imports(path: Path, name: str) -> set[str]:
    """agent.* modules ``path`` imports anywhere: lazily inside functions and in ``TYPE_CHECKING`` blocks too
    (a cycle only the type checker follows still ties the two modules together for a reader)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("agent.") and m != name}


def test_no_import_cycle_inside_agent():
    modules = {}
    for path in (REPO / "agent").rglob("*.py"):
        rel = path.relative_to(REPO).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
    graph = {n: {m for m in _module_imports(p, n) if m in modules} for n, p in modules.items()}
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(m):], m]))
            if m not in state:
                visit(m, [*stack, m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


def test_the_loop_knows_its_stages_not_the_config():
    """The frame loop and its observers import neither the config nor the runner that reads it."""
    for mod in ("pipeline", "observers", "loop_settings"):
        imported = _module_imports(REPO / "agent" / f"{mod}.py", f"agent.{mod}")
        assert not {m for m in imported if m.startswith(("agent.config", "agent.runner"))}, mod


def test_observers_see_a_read_only_view_of_the_loop(manifest):
    from agent.capture import ArraySource, SourceConfig
    from agent.config import AgentConfig
    from agent.detectors.haar import HaarDetector
    from agent.pipeline import LoopView, NullPublisher, Observer
    from agent.runner import build_pipeline
    from agent.synthetic import grid_frame

    seen = []

    class Peek(Observer):
        def on_frame(self, loop, image, capture_time):
            seen.append((type(loop), loop.frames, loop.classifier_name, len(loop.visible_faces(capture_time))))
            for reach in ("tracker", "classifier", "detector", "source", "stop", "settings"):
                assert not hasattr(loop, reach), reach
            with pytest.raises(AttributeError):
                loop.frames = 0

    class Named:
        name = "named"

        def infer(self, faces):
            return __import__("numpy").full((len(faces), 7), 1 / 7, "float32")

        def describe(self):
            return "named"

        def close(self):
            pass

    cfg = AgentConfig()
    build_pipeline(cfg, manifest, ArraySource(SourceConfig(), [grid_frame(1)] * 2), HaarDetector(cfg.detector),
                   Named(), NullPublisher(), observers=[Peek()]).run()
    assert seen == [(LoopView, 1, "named", 1), (LoopView, 2, "named", 1)]


def test_the_readmes_where_things_live_matches_the_tree():
    """Every path the README's table names exists, and every agent module, package and top-level folder is named."""
    text = (REPO / "README.md").read_text()
    table = text.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    named = {p.rstrip("/") for row in table.splitlines() if row.startswith("| `")
             for p in re.findall(r"`([^`]+)`", row.split("|")[1])}
    assert named and {p for p in named if not (REPO / p).exists()} == set()
    agent = {f"agent/{p.name}" for p in (REPO / "agent").iterdir() if not p.name.startswith(("_", "."))
             and (p.suffix == ".py" or p.is_dir())}
    top = {p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
           and p.name not in {"agent", "build", "dist", "runs"} and not p.name.endswith(".egg-info")}
    assert {p for p in agent | top if not any(n == p or n.startswith(p + "/") for n in named)} == set()


def test_no_module_over_450_lines():
    long = {str(p.relative_to(REPO)): n for p in [*(REPO / "agent").rglob("*.py"), *(REPO / "host_tools").rglob("*.py")]
            if (n := len(p.read_text().splitlines())) > 450}
    assert long == {}


def test_no_function_over_100_lines():
    long = {}
    for p in [*(REPO / "agent").rglob("*.py"), *(REPO / "host_tools").rglob("*.py")]:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 100:
                long[f"{p.relative_to(REPO)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}
