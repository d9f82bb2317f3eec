"""fer-agent command line: config commands, one-line errors with exit 2, health wiring."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.cli import main


def fer_agent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=120)


def test_print_config_then_check_config(tmp_path, capsys):
    assert main(["print-config"]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: ok"


def test_check_config_error_is_one_line_exit_2(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text("backend:\n  type: foo\n")
    proc = fer_agent("check-config", str(path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"fer-agent check-config: error: {path}: backend.type: 'foo' is not one of auto, qnn, snpe, tflite"
    )


def test_run_with_a_missing_source_fails_cleanly(tmp_path):
    proc = fer_agent("run", "--source", str(tmp_path / "missing.mp4"), "--backend", "tflite", "--broker", "127.0.0.1:9")
    assert proc.returncode == 2, proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"fer-agent run: error: source.uri: {tmp_path / 'missing.mp4'}: no such file"
    )
    assert "Traceback" not in proc.stderr


def test_bad_override_names_the_flag(capsys):
    assert main(["run", "--backend", "cuda"]) == 2
    assert "--backend: 'cuda' is not one of auto, qnn, snpe, tflite" in capsys.readouterr().err


def test_health_subcommand_is_wired(tmp_path, capsys):
    assert main(["health", "--health-file", str(tmp_path / "none.json")]) == 1
    assert capsys.readouterr().out.startswith("unhealthy: agent not running")


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("fer-agent ")
