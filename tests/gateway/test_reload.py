"""Live reload of the route table: on file change and on SIGHUP; bad tables never serve."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from medianest.app import Hub, create_app
from medianest.config import load_settings
from tests.conftest import LogCapture
from tests.gateway.test_proxy import fetch
from tests.support.servers import free_port, serve_asgi
from tests.support.upstream import upstream_app


def table(url: str, *prefixes: str) -> str:
    return "\n".join(
        f'[[routes]]\nname = "r{i}"\nmatch = {{ path_prefix = "{p}" }}\n'
        f'target = {{ instances = [{{ url = "{url}" }}] }}\nauth = {{ required = false }}\n'
        "strip_prefix = true\n"
        for i, p in enumerate(prefixes)
    )


async def wait_for_status(url: str, wanted: int, deadline: float = 20.0) -> None:
    async with asyncio.timeout(deadline):
        while (await fetch("GET", url))[0] != wanted:
            await asyncio.sleep(0.05)


async def test_file_change_reloads_and_a_bad_file_keeps_the_old_table(
    tmp_path: Path, logs: LogCapture
) -> None:
    async with serve_asgi(upstream_app("up")) as upstream:
        routes = tmp_path / "routes.toml"
        routes.write_text(table(upstream.url, "/one/"))
        settings = load_settings(
            overrides={"data_dir": str(tmp_path), "gateway": {"routes_file": str(routes)}}
        )
        app = create_app(settings, hub=Hub(settings), configure_logs=False)
        async with serve_asgi(app) as hub:
            assert (await fetch("GET", f"{hub.url}/one/x"))[0] == 200
            routes.write_text(table(upstream.url, "/one/", "/two/"))
            await wait_for_status(f"{hub.url}/two/x", 200)
            routes.write_text('[[routes]]\nname = "broken"\n')
            async with asyncio.timeout(20):
                while "gateway routes rejected" not in logs.text:
                    await asyncio.sleep(0.05)
            assert (await fetch("GET", f"{hub.url}/two/x"))[0] == 200
            rejected = [
                r for r in logs.records if r.get("event", "").startswith("gateway routes rejected")
            ]
            assert any("routes.0.match" in p for p in rejected[-1]["problems"])


def test_sighup_reloads_a_running_server(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "medianest", "simulate", "kuma", "--port", str(upstream_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port = free_port()
    routes = tmp_path / "routes.toml"
    routes.write_text(table(f"http://127.0.0.1:{upstream_port}", "/a/"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIANEST_")}
    env.update(
        MEDIANEST_DATA_DIR=str(tmp_path / "data"),
        MEDIANEST_GATEWAY__ROUTES_FILE=str(routes),
        MEDIANEST_GATEWAY__WATCH_INTERVAL="0",
        MEDIANEST_LOG__FORMAT="json",
    )
    hub = subprocess.Popen(
        [sys.executable, "-m", "medianest", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def status(path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return -1

    def wait(path: str, wanted: int) -> None:
        deadline = time.monotonic() + 60
        while status(path) != wanted:
            assert time.monotonic() < deadline, f"{path} never answered {wanted}"
            assert hub.poll() is None, hub.communicate()
            time.sleep(0.05)

    try:
        wait("/a/__sim__/health", 200)
        assert status("/b/__sim__/health") == 404
        # The file watcher is off (watch_interval = 0): only the signal can load the new table.
        routes.write_text(table(f"http://127.0.0.1:{upstream_port}", "/a/", "/b/"))
        time.sleep(0.5)
        assert status("/b/__sim__/health") == 404
        hub.send_signal(signal.SIGHUP)
        wait("/b/__sim__/health", 200)
        assert hub.poll() is None
    finally:
        hub.send_signal(signal.SIGTERM)
        _, err = hub.communicate(timeout=20)
        upstream.terminate()
        upstream.wait(timeout=20)
    assert hub.returncode == 0, err
    assert '"trigger": "SIGHUP"' in err
