"""API gateway throughput: nginx, an nginx proxy, a bare aiohttp proxy and the hub, side by side.

The HTTP servers answer the same 1 KB body, measured with wrk (Debian's) in one run,
interleaved over several rounds, medians reported:

1. ``nginx``: nginx serving a static 1 KB file (the upstream of every proxy below);
2. ``nginx proxy``: a second nginx reverse-proxying to (1) over keep-alive connections;
3. ``aiohttp proxy``: a ~30-line aiohttp.web proxy on uvloop with a pooled ClientSession,
   the floor of a Python proxy (the goal's baseline);
   ``(3b) ASGI proxy``: the same proxy as a bare ASGI app on uvicorn with uvloop and
   httptools, the hub's own server stack without the hub (information: it separates the
   server's cost from the gateway's);
   ``(3c) ASGI proxy + issue's features``: (3b) plus only the per-request work the gateway
   issue asks of every request of this route, with the libraries it names (API key, one
   ``limits`` check with RateLimit-* headers, forwarded headers both ways, X-Forwarded-*,
   Forwarded, X-Request-Id, traceparent, Prometheus counter and histogram) and nothing
   else (information: an upper bound for any gateway on this stack that does what the
   issue asks);
4. ``medianest``: ``medianest serve --roles gateway,api`` (uvicorn, uvloop, httptools) with
   one route to (1), API-key auth (the key created with ``medianest keys create``), a
   1,000,000/minute per-key rate limit (checked, never refusing) and its Prometheus metrics.

Each at 50 connections (2 wrk threads) and at 1 connection (1 thread). Goal: (4) reaches at
least 90 % of (3)'s requests/s with a p99 at most 1.2x (3)'s at 50 connections, and adds
under 0.3 ms to (3)'s p50 at one connection.

    .venv/bin/python bench/gateway_throughput.py [--rounds 3] [--duration 5]
    .venv/bin/python bench/gateway_throughput.py --profile /tmp/pyspy/bin/py-spy

``--profile`` also records the hub with py-spy during one extra 50-connection run and
prints the functions where its time goes. Needs ``nginx`` and ``wrk`` (apt-get install
nginx wrk); every server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BODY = bytes(range(256)) * 4  # 1 KB
RATE_LIMIT = "1000000/minute"

AIOHTTP_PROXY = '''\
"""The floor of a Python proxy: aiohttp.web in front of a pooled aiohttp ClientSession."""

import asyncio
import sys

import aiohttp
import uvloop
from aiohttp import web

PORT, UPSTREAM = int(sys.argv[1]), sys.argv[2]


async def session(app: web.Application):
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=30)
    app["session"] = aiohttp.ClientSession(connector=connector, auto_decompress=False)
    yield
    await app["session"].close()


async def proxy(request: web.Request) -> web.Response:
    data = request.content if request.body_exists else None
    url = UPSTREAM + request.path_qs
    async with request.app["session"].request(request.method, url, data=data) as upstream:
        body = await upstream.read()
        kind = upstream.headers.get("Content-Type", "application/octet-stream")
        return web.Response(body=body, status=upstream.status, headers={"Content-Type": kind})


app = web.Application()
app.cleanup_ctx.append(session)
app.router.add_route("*", "/{tail:.*}", proxy)
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
web.run_app(app, host="127.0.0.1", port=PORT, access_log=None, print=None)
'''

ASGI_COMMON = '''\
state = {}


async def lifespan(receive, send, **options):
    """Open the pooled client session (``options`` added) at start-up, close it at the end."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=30)
            state["session"] = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, **options)
            await send({"type": "lifespan.startup.complete"})
        else:
            await state["session"].close()
            await send({"type": "lifespan.shutdown.complete"})
            return


def serve(app):
    uvicorn.run(app, host="127.0.0.1", port=PORT, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)
'''
"""The parts the two ASGI proxies share (their session's lifespan, uvicorn), spliced in."""


ASGI_PROXY = (
    '''\
"""The same proxy as an ASGI app on uvicorn (uvloop, httptools): the hub's server, bare."""

import sys

import aiohttp
import uvicorn

PORT, UPSTREAM = int(sys.argv[1]), sys.argv[2]
'''
    + ASGI_COMMON
    + """

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    query = scope["query_string"].decode()
    url = UPSTREAM + scope["path"] + (f"?{query}" if query else "")
    async with state["session"].request(scope["method"], url) as upstream:
        body = await upstream.read()
        kind = upstream.headers.get("Content-Type", "application/octet-stream").encode()
        start = {"type": "http.response.start", "status": upstream.status}
        await send({**start, "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": body})


serve(app)
"""
)


FEATURE_PROXY = (
    '''\
"""(3c): the bare ASGI proxy plus only the per-request work the gateway issue asks for, with
the libraries it names, written as tightly as possible: an API key looked up by fingerprint
and compared in constant time, one `limits` check (sliding window counter, memory storage,
hit + window stats for the RateLimit-* headers), request headers forwarded without hop-by-hop
ones plus X-Forwarded-For/Proto/Host, Forwarded, X-Request-Id and traceparent, the answer's
headers forwarded likewise, a Prometheus counter and histogram. No routing table, no
failover, no breaker, no access line, no error handling."""

import hashlib
import hmac
import random
import sys
import time

import aiohttp
import uvicorn
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from prometheus_client import Counter, Histogram

PORT, UPSTREAM, KEY = int(sys.argv[1]), sys.argv[2], sys.argv[3]
HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
       b"transfer-encoding", b"upgrade", b"host", b"x-api-key", b"content-length"}
KEYS = {hashlib.sha256(KEY.encode()).digest(): KEY.encode()}
LIMIT = parse("1000000/minute")
limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
REQUESTS = Counter("requests", "", ["route", "method", "status"])
DURATION = Histogram("duration_seconds", "", ["route"])
'''
    + ASGI_COMMON
    + """

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        skip = ("User-Agent", "Accept-Encoding", "Accept")
        return await lifespan(receive, send, skip_auto_headers=skip)
    started = time.perf_counter()
    headers, host, key = [], "", b""
    for k, v in scope["headers"]:
        if k == b"host":
            host = v.decode()
        elif k == b"x-api-key":
            key = v
        if k not in HOP:
            headers.append((k.decode(), v.decode()))
    stored = KEYS.get(hashlib.sha256(key).digest())
    if stored is None or not hmac.compare_digest(stored, key):
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await limiter.hit(LIMIT, "route", "key", "bench")
    stats = await limiter.get_window_stats(LIMIT, "route", "key", "bench")
    ip = scope["client"][0]
    request_id = f"{random.getrandbits(64):016x}"
    trace = f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-00"
    headers += [("x-forwarded-for", ip), ("x-forwarded-proto", "http"),
                ("x-forwarded-host", host), ("forwarded", f"for={ip};proto=http;host={host}"),
                ("x-request-id", request_id),
                ("traceparent", trace)]
    query = scope["query_string"].decode()
    url = UPSTREAM + scope["path"] + (f"?{query}" if query else "")
    async with state["session"].request(scope["method"], url, headers=headers) as upstream:
        body = await upstream.read()
        out = [(k.lower(), v) for k, v in upstream.raw_headers if k.lower() not in HOP]
        out += [(b"x-request-id", request_id.encode()),
                (b"ratelimit-limit", str(LIMIT.amount).encode()),
                (b"ratelimit-remaining", str(stats.remaining).encode()),
                (b"ratelimit-reset", str(max(0, int(stats.reset_time - time.time()))).encode())]
        await send({"type": "http.response.start", "status": upstream.status, "headers": out})
        await send({"type": "http.response.body", "body": body})
    REQUESTS.labels("bench", scope["method"], str(upstream.status)).inc()
    DURATION.labels("bench").observe(time.perf_counter() - started)


serve(app)
"""
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, headers: dict[str, str], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=2) as answer:
                if answer.status == 200 and answer.read() == BODY:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} never answered the 1 KB body")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def nginx_config(directory: Path, server: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    temp = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    path = directory / "nginx.conf"
    path.write_text(
        f"{user}worker_processes 1;\nerror_log {directory / 'error.log'} warn;\n"
        f"pid {directory / 'nginx.pid'};\nevents {{ worker_connections 4096; }}\n"
        f"http {{\n    access_log off;\n{temp}\n    keepalive_requests 1000000;\n"
        f"{server}\n}}\n"
    )
    return path


@contextlib.contextmanager
def nginx(directory: Path, server: str, url: str) -> Iterator[None]:
    config = nginx_config(directory, server)
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    command = [binary, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(config)]
    process = subprocess.Popen([*command, "-g", "daemon off;"])
    try:
        wait_for(url, {}, process)
        yield
    finally:
        stop(process, signal.SIGQUIT)


@contextlib.contextmanager
def python_proxy(
    directory: Path, port: int, upstream: str, source: str, key: str = ""
) -> Iterator[None]:
    script = directory / f"proxy_{port}.py"
    script.write_text(source)
    process = subprocess.Popen([sys.executable, str(script), str(port), upstream, key])
    try:
        wait_for(f"http://127.0.0.1:{port}/1k", {"X-Api-Key": key}, process)
        yield
    finally:
        stop(process)


def medianest(directory: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIANEST_")}
    env.update(MEDIANEST_DATA_DIR=str(directory / "data"), MEDIANEST_LOG__FORMAT="json")
    result = subprocess.run(
        [sys.executable, "-m", "medianest", *args],
        env=env,
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"medianest {' '.join(args)}: {result.stderr}")
    return result.stdout


@contextlib.contextmanager
def hub(
    directory: Path, port: int, upstream: str, log_level: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``medianest serve`` with one authenticated, rate-limited route; yields the API key."""
    directory.mkdir(parents=True, exist_ok=True)
    routes = directory / "routes.toml"
    routes.write_text(
        '[[routes]]\nname = "bench"\nmatch = { path_prefix = "/up/" }\n'
        f'target = {{ instances = [{{ url = "{upstream}" }}] }}\nstrip_prefix = true\n'
        "auth = { required = true }\n"
        f'rate_limits = [{{ limit = "{RATE_LIMIT}", per = "key" }}]\n'
    )
    medianest(directory, "migrate")
    created = medianest(directory, "keys", "create", "bench", "--owner", "bench")
    key = next(word for word in created.split() if re.fullmatch(r"mn_[A-Za-z0-9_]{20,}", word))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIANEST_")}
    env.update(
        MEDIANEST_DATA_DIR=str(directory / "data"),
        MEDIANEST_GATEWAY__ROUTES_FILE=str(routes),
        MEDIANEST_LOG__FORMAT="json",
        MEDIANEST_LOG__LEVEL=log_level,
    )
    serve = ("--port", str(port), "--roles", "gateway,api")
    with (directory / "hub.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "medianest", "serve", *serve],
            env=env,
            cwd=directory,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/up/1k", {"X-Api-Key": key}, process)
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
            if b'gateway_requests_total{method="GET",route="bench",status="200"}' not in (
                metrics.read()
            ):
                raise RuntimeError("the hub's /metrics does not count gateway requests")
            yield key, process
        finally:
            stop(process)


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    """Socket errors and timeouts (wrk gives up on an answer after 2 s)."""
    non_2xx: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, connections: int, duration: float, key: str) -> Run:
    threads = 1 if connections == 1 else 2
    header = ("-H", f"X-Api-Key: {key}")
    output = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", *header, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    latency = {
        p: float(v) * _UNITS[u]
        for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    }
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Run(rps, latency["50"], latency["99"], errors, int(non2xx.group(1)) if non2xx else 0)


def median_run(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.errors for r in runs),
        sum(r.non_2xx for r in runs),
    )


# Where a sample of the hub is counted: the first of these its stack shows, leaf first.
AREAS = (
    ("request log line (structlog, logging)", r"structlog|logging/__init__|observability/logging"),
    ("Prometheus metrics", r"prometheus_client"),
    ("rate limit (limits)", r"RateLimiter|limits/"),
    ("API key verification", r"apikeys|authenticate|hmac"),
    ("upstream request headers, traceparent", r"forwarding\.py|_upstream_headers|secrets|random"),
    ("asyncio.timeout", r"asyncio/timeouts"),
    ("aiohttp client", r"aiohttp/"),
    ("uvicorn (httptools protocol)", r"uvicorn/protocols"),
    ("route match, canonical path", r"gateway/table\.py"),
    ("balancing, outlier, breaker", r"balancing\.py|outlier\.py|resilience/"),
    ("gateway, own code", r"medianest/gateway/"),
    ("FastAPI/Starlette stack, request context", r"fastapi/|starlette/|api/middleware|app\.py"),
)


def profile(py_spy: str, pid: int, url: str, key: str, duration: float) -> None:
    """Record the hub with py-spy under 50 connections; print where its time goes."""
    raw = Path(tempfile.gettempdir()) / "medianest-gateway-hub.pyspy.txt"
    options = ("--duration", f"{duration:g}", "--rate", "200", "--threads", "--full-filenames")
    recorder = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(raw), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    run = wrk(url, 50, duration, key)
    recorder.wait(timeout=duration + 60)
    own: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread, *frames = stack.split(";")
        if "MainThread" not in thread or not frames:
            continue  # the other threads wait on queues
        n = int(count)
        samples += n
        own[re.sub(r"\(/.*?/(site-packages|src|python3\.\d+)/", "(", frames[-1])] += n
        leaf_first = reversed(frames)
        area = next(
            (name for f in leaf_first for name, pattern in AREAS if re.search(pattern, f)),
            "event loop, other",
        )
        areas[area] += n
    per_request = 1e6 / run.rps
    print(f"\npy-spy: {samples} samples of the hub's main thread at {run.rps:,.0f} req/s")
    print(f"({per_request:.0f} us of the hub per request; raw stacks in {raw})\n")
    print("| area | share | us/request |\n|---|---:|---:|")
    for name, n in areas.most_common():
        print(f"| {name} | {100 * n / samples:.1f} % | {per_request * n / samples:.0f} |")
    print("\nself time, top 20:")
    for frame, n in own.most_common(20):
        print(f"  {100 * n / samples:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--log-level", default="info", help="the hub's log level")
    parser.add_argument("--profile", metavar="PY_SPY", help="py-spy executable: profile the hub")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not (shutil.which(tool) or os.access(f"/usr/sbin/{tool}", os.X_OK)):
            sys.exit(f"{tool} is missing: apt-get install -y nginx wrk")
    with tempfile.TemporaryDirectory(prefix="mn-bench-") as tmp, contextlib.ExitStack() as stack:
        directory = Path(tmp)
        (directory / "1k.bin").write_bytes(BODY)
        origin_port, proxy_port, aio_port, asgi_port, feature_port, hub_port = (
            free_port() for _ in range(6)
        )
        origin = f"http://127.0.0.1:{origin_port}"
        stack.enter_context(
            nginx(
                directory / "origin",
                f"    server {{\n        listen 127.0.0.1:{origin_port};\n"
                f"        location = /1k {{ alias {directory / '1k.bin'}; "
                "default_type application/octet-stream; }\n    }",
                f"{origin}/1k",
            )
        )
        stack.enter_context(
            nginx(
                directory / "proxy",
                f"    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}\n"
                f"    server {{\n        listen 127.0.0.1:{proxy_port};\n"
                "        location / { proxy_pass http://origin; proxy_http_version 1.1; "
                'proxy_set_header Connection ""; }\n    }',
                f"http://127.0.0.1:{proxy_port}/1k",
            )
        )
        stack.enter_context(python_proxy(directory, aio_port, origin, AIOHTTP_PROXY))
        stack.enter_context(python_proxy(directory, asgi_port, origin, ASGI_PROXY))
        key, hub_process = stack.enter_context(
            hub(directory / "hub", hub_port, origin, args.log_level)
        )
        stack.enter_context(python_proxy(directory, feature_port, origin, FEATURE_PROXY, key))
        targets = {
            "(1) nginx": f"{origin}/1k",
            "(2) nginx proxy": f"http://127.0.0.1:{proxy_port}/1k",
            "(3) aiohttp proxy": f"http://127.0.0.1:{aio_port}/1k",
            "(3b) ASGI proxy": f"http://127.0.0.1:{asgi_port}/1k",
            "(3c) ASGI proxy + issue's features": f"http://127.0.0.1:{feature_port}/1k",
            "(4) medianest": f"http://127.0.0.1:{hub_port}/up/1k",
        }
        for url in targets.values():  # warm-up: pools, caches, the key's verification
            wrk(url, 50, 2, key)
        runs: dict[tuple[str, int], list[Run]] = collections.defaultdict(list)
        names = list(targets)
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                for connections in (50, 1):
                    run = wrk(targets[name], connections, args.duration, key)
                    runs[name, connections].append(run)
                    print(
                        f"round {round_ + 1} {name:<18} c={connections:<3}"
                        f" {run.rps:>9,.0f} req/s  p50 {run.p50_ms:6.2f} ms"
                        f"  p99 {run.p99_ms:6.2f} ms"
                        + (f"  socket errors {run.errors}" if run.errors else "")
                        + (f"  non-2xx {run.non_2xx}" if run.non_2xx else ""),
                        flush=True,
                    )
        report({k: median_run(v) for k, v in runs.items()}, args)
        if args.profile:
            profile(
                args.profile,
                hub_process.pid,
                targets["(4) medianest"],
                key,
                max(args.duration, 10),
            )


def report(m: dict[tuple[str, int], Run], args: argparse.Namespace) -> None:
    print(
        f"\nmedians of {args.rounds} rounds x {args.duration:g} s, wrk --latency, 1 KB answer,"
        f" hub log level {args.log_level}\n"
    )
    print(
        "| server | req/s (50 conn) | p50 ms | p99 ms | req/s (1 conn) | p50 ms | p99 ms "
        "| socket errors | non-2xx |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in (
        "(1) nginx",
        "(2) nginx proxy",
        "(3) aiohttp proxy",
        "(3b) ASGI proxy",
        "(3c) ASGI proxy + issue's features",
        "(4) medianest",
    ):
        many, one = m[name, 50], m[name, 1]
        print(
            f"| {name} | {many.rps:,.0f} | {many.p50_ms:.2f} | {many.p99_ms:.2f} "
            f"| {one.rps:,.0f} | {one.p50_ms:.3f} | {one.p99_ms:.3f} "
            f"| {many.errors + one.errors} | {many.non_2xx + one.non_2xx} |"
        )
    bare, gw = m["(3) aiohttp proxy", 50], m["(4) medianest", 50]
    bare1, gw1 = m["(3) aiohttp proxy", 1], m["(4) medianest", 1]
    throughput = gw.rps / bare.rps
    tail = gw.p99_ms / bare.p99_ms
    added = gw1.p50_ms - bare1.p50_ms
    checks = [
        (f"throughput (4)/(3) = {throughput:.2f} (goal >= 0.90)", throughput >= 0.9),
        (f"p99 (4)/(3) at 50 connections = {tail:.2f}x (goal <= 1.2x)", tail <= 1.2),
        (f"p50 added at 1 connection = {added:+.3f} ms (goal < 0.3 ms)", added < 0.3),
    ]
    print()
    for text, ok in checks:
        print(f"{'met   ' if ok else 'MISSED'} {text}")
    asgi = m["(3b) ASGI proxy", 50]
    print(f"(information) (4)/(3b), the hub against its server stack bare: {gw.rps / asgi.rps:.2f}")
    features = m["(3c) ASGI proxy + issue's features", 50]
    print(
        f"(information) (3c)/(3), the issue's per-request work alone against the floor:"
        f" {features.rps / bare.rps:.2f}; (4)/(3c): {gw.rps / features.rps:.2f}"
    )
    print(f"\nverdict: goal {'met' if all(ok for _, ok in checks) else 'missed'}")


if __name__ == "__main__":
    main()
