"""The ``medianest`` command as a user runs it: real processes, real exit codes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.servers import free_port

MEDIANEST = [sys.executable, "-m", "medianest"]


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIANEST_")}
    env.update({"MEDIANEST_DATA_DIR": str(tmp_path / "data"), "MEDIANEST_LOG__FORMAT": "json"})
    env.update(extra)
    return env


def run(args: list[str], tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MEDIANEST, *args],
        env=env_for(tmp_path, **extra),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_version_and_help(tmp_path: Path) -> None:
    result = run(["version"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("medianest ")
    result = run(["--help"], tmp_path)
    assert result.returncode == 0
    for command in ("serve", "migrate", "doctor", "version"):
        assert command in result.stdout
    assert run(["serve", "--help"], tmp_path).returncode == 0


def test_broken_configuration_exits_2_with_explanation(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        "[server]\nport = 'eighty'\n[upstreams.plex]\nurl = 'http://p'\ntoken = 'T0KEN'\n"
    )
    result = run(["serve", "--config", str(cfg)], tmp_path)
    assert result.returncode == 2
    assert "server.port = 'eighty'" in result.stderr
    assert "valid integer" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "T0KEN" not in result.stderr


def test_bad_value_in_environment_exits_2(tmp_path: Path) -> None:
    result = run(["migrate"], tmp_path, MEDIANEST_DATABASE__URL="mongodb://x/y")
    assert result.returncode == 2
    assert "database.url" in result.stderr
    assert "unsupported database scheme 'mongodb'" in result.stderr


def test_unknown_option_exits_2(tmp_path: Path) -> None:
    result = run(["serve", "--prot", "9"], tmp_path)
    assert result.returncode == 2
    assert "No such option" in result.stderr


def test_migrate_then_check(tmp_path: Path) -> None:
    check = run(["migrate", "--check"], tmp_path)
    assert check.returncode == 1
    assert check.stdout.startswith("pending: 0001")
    first = run(["migrate"], tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied 0001")
    again = run(["migrate"], tmp_path)
    assert again.stdout.startswith("already up to date")
    assert run(["migrate", "--check"], tmp_path).returncode == 0


def test_migrate_against_unreachable_database_exits_1(tmp_path: Path) -> None:
    result = run(["migrate"], tmp_path, MEDIANEST_DATABASE__URL="postgresql://u:pw9@127.0.0.1:1/x")
    assert result.returncode == 1
    assert "database unreachable" in result.stderr
    assert "pw9" not in result.stderr
    assert "Traceback" not in result.stderr


def test_doctor_reports_each_check(tmp_path: Path) -> None:
    dead = free_port()
    cfg = tmp_path / "m.toml"
    cfg.write_text(f"[upstreams.overseerr]\nurl = 'http://127.0.0.1:{dead}'\napi_key = 'K'\n")
    assert run(["migrate", "-c", str(cfg)], tmp_path).returncode == 0
    result = run(["doctor", "-c", str(cfg)], tmp_path, COLUMNS="200")
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "configuration" in out
    assert "database" in out
    assert "upstream:overseerr" in out
    assert "unreachable" in out
    assert "problems found" in out


def test_doctor_healthy(tmp_path: Path) -> None:
    assert run(["migrate"], tmp_path).returncode == 0
    result = run(["doctor"], tmp_path, COLUMNS="200")
    assert result.returncode == 0, result.stdout
    assert "healthy" in result.stdout


def _wait_for_port(port: int, proc: subprocess.Popen[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited early: {proc.communicate()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail("serve did not listen in time")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    import urllib.request

    port = free_port()
    proc = subprocess.Popen(
        [*MEDIANEST, "serve", "--port", str(port)],
        env=env_for(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_port(port, proc, time.monotonic() + 60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=10) as resp:
            assert resp.status == 200
        sent = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
        stopped_in = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert stopped_in < 5
    assert '"event": "medianest stopped"' in err
    assert "Traceback" not in err
