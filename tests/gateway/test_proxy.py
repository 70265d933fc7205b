"""The gateway over real sockets: routing, forwarding, limits, failures, streaming."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import tracemalloc
from typing import Any

import aiohttp
import pytest

from medianest.gateway.table import RouteTable
from tests.gateway.conftest import gateway_for, route, upstreams
from tests.support.upstream import PATTERN

FAST = {"timeout": {"attempt": 1.0, "total": 3.0}, "retry": {"base_delay": 0.0, "max_delay": 0.0}}


async def fetch(method: str, url: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.request(method, url, **kw) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()


async def test_prefix_strip_forwarded_headers_and_fallthrough() -> None:
    async with upstreams("a") as up, gateway_for(route("svc", [up["a"].url])) as (_, gw):
        status, headers, body = await fetch(
            "GET",
            f"{gw}/svc/items/7?x=1&y=a%20b",
            headers={
                "X-Request-Id": "req-123",
                "Connection": "X-Secret-Hop",
                "X-Secret-Hop": "1",
                "X-Api-Key": "mn_not_forwarded",
                "Authorization": "Basic dXNlcjpwYXNz",
            },
        )
        assert status == 200
        seen = json.loads(body)
        assert seen["path"] == "/items/7"
        assert seen["query"] == "x=1&y=a%20b"
        sent = dict(seen["headers"])
        assert sent["x-forwarded-for"] == "127.0.0.1"
        assert sent["x-forwarded-proto"] == "http"
        assert sent["x-forwarded-host"].startswith("127.0.0.1:")
        assert sent["forwarded"].startswith("for=127.0.0.1;proto=http")
        assert sent["x-request-id"] == "req-123"
        assert sent["host"] == up["a"].url.removeprefix("http://")
        assert "x-secret-hop" not in sent
        assert "x-api-key" not in sent
        assert sent["authorization"] == "Basic dXNlcjpwYXNz"
        assert sent["traceparent"].startswith("00-")
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        _, _, body = await fetch("GET", f"{gw}/svc/x", headers={"traceparent": parent})
        assert dict(json.loads(body)["headers"])["traceparent"] == parent
        assert headers["x-request-id"] == "req-123"
        assert "x-upstream-hop" not in headers
        assert headers["x-instance"] == "a"
        status, _, body = await fetch("GET", f"{gw}/other/thing")
        assert status == 404
        assert json.loads(body)["hub"] is True


async def test_regex_rewrite_with_groups_and_method_match() -> None:
    async with upstreams("a") as up:
        r = route(
            "media",
            [up["a"].url],
            match={"path_regex": r"^/media/(?P<kind>movie|tv)/(?P<id>[0-9]+)$", "methods": ["GET"]},
            strip_prefix=False,
            rewrite={"pattern": r"^/media/(movie|tv)/([0-9]+)$", "replacement": r"/api/v1/\1/\2"},
        )
        async with gateway_for(r) as (_, gw):
            status, _, body = await fetch("GET", f"{gw}/media/tv/42")
            assert status == 200
            assert json.loads(body)["path"] == "/api/v1/tv/42"
            status, _, body = await fetch("POST", f"{gw}/media/tv/42")
            assert status == 404
            assert json.loads(body)["hub"] is True


@pytest.mark.parametrize(
    "path",
    ["/svc/%2e%2e/admin", "/svc/..%2fsecret", "/svc/a%2Fb", "/svc/./x", "/svc/%00", "/svc/a%5cb"],
)
async def test_crafted_paths_never_escape_the_route(path: str) -> None:
    async with upstreams("a") as up, gateway_for(route("svc", [up["a"].url])) as (_, gw):
        reader, writer = await asyncio.open_connection("127.0.0.1", int(gw.rsplit(":", 1)[1]))
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b"application/problem+json" in answer
        assert up["a"].server.server_state.total_requests == 0


async def test_absolute_form_target_and_host_header_cannot_choose_the_upstream() -> None:
    async with upstreams("a") as up, gateway_for(route("svc", [up["a"].url])) as (_, gw):
        port = int(gw.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = (
            "GET http://169.254.169.254/svc/echo HTTP/1.1\r\nHost: 169.254.169.254\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        answer = await reader.read()
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        seen = json.loads(body)
        assert seen["instance"] == "a"
        assert seen["path"] == "/echo"
        _status, _, body = await fetch("GET", f"{gw}/svc/echo", headers={"Host": "evil.example"})
        assert json.loads(body)["instance"] == "a"


async def test_limits_413_and_431() -> None:
    async with (
        upstreams("a") as up,
        gateway_for(route("svc", [up["a"].url]), max_body_bytes=1000, max_header_bytes=2048) as (
            _,
            gw,
        ),
    ):
        status, _headers, body = await fetch("POST", f"{gw}/svc/echo", data=b"x" * 2000)
        assert status == 413
        problem = json.loads(body)
        assert problem["route"] == "svc"
        assert "127.0.0.1" not in json.dumps(problem)

        async def chunked() -> Any:
            for _ in range(5):
                yield b"y" * 400

        status, _, _ = await fetch("POST", f"{gw}/svc/echo", data=chunked())
        assert status == 413
        status, _, _ = await fetch("GET", f"{gw}/svc/echo", headers={"X-Big": "z" * 3000})
        assert status == 431
        status, _, body = await fetch("POST", f"{gw}/svc/echo", data=b"x" * 999)
        assert status == 200
        assert json.loads(body)["body_size"] == 999


async def test_unreachable_is_502_and_slow_is_504_naming_route_not_address() -> None:
    from tests.support.servers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    async with (
        upstreams("a") as up,
        gateway_for(
            route("dead", [dead], policy=FAST), route("slowpoke", [up["a"].url], policy=FAST)
        ) as (_, gw),
    ):
        status, headers, body = await fetch("GET", f"{gw}/dead/x")
        problem = json.loads(body)
        assert status == 502
        assert headers["content-type"] == "application/problem+json"
        assert problem["route"] == "dead"
        assert dead.rsplit(":", 1)[1] not in json.dumps(problem)
        status, _, body = await fetch("GET", f"{gw}/slowpoke/slow?delay=5")
        assert status == 504
        assert json.loads(body)["type"] == "/problems/upstream-timeout"


@pytest.mark.parametrize(
    ("limits", "attempts", "expected"),
    [
        ({"attempt": 0.6, "total": 0}, 1, 1),  # the attempt's own limit, no deadline
        ({"attempt": 30.0, "total": 0.8}, 1, 1),  # the deadline ends the attempt first
        ({"attempt": 0.6, "total": 30.0}, 3, 3),  # each of three attempts times out alone
    ],
    ids=["attempt-only", "deadline-first", "attempt-first-retried"],
)
async def test_a_slow_upstream_is_cut_off_by_whichever_limit_comes_first(
    limits: dict[str, float], attempts: int, expected: int
) -> None:
    """The client gets a 504 after the expected attempts, whichever limit ends an attempt:
    its own (aiohttp's read-inactivity bound has the same length and may fire as well) or
    the route's total deadline (only the hub's timer can end that one)."""
    policy = {"timeout": limits, "retry": {"max_attempts": attempts, **FAST["retry"]}}
    async with (
        upstreams("a") as up,
        gateway_for(route("slowpoke", [up["a"].url], policy=policy)) as (_, gw),
    ):
        status, _, body = await fetch("GET", f"{gw}/slowpoke/slow?delay=4")
        assert status == 504
        assert json.loads(body)["type"] == "/problems/upstream-timeout"
        assert up["a"].server.config.app.state.hits["slow"] == expected


@pytest.mark.parametrize("size", [999, 1_000, 1_001, 5_000, 60_000, 70_000])
async def test_an_answer_over_the_buffering_limit_is_relayed_whole(size: int) -> None:
    """A cached route buffers answers up to ``cache.max_bytes``; one just over it (small or
    not) is streamed on with what was already read in front, never cut short."""
    cache = {"ttl": 30, "max_bytes": 1_000}
    async with (
        upstreams("a") as up,
        gateway_for(route("svc", [up["a"].url], cache=cache)) as (_, gw),
    ):
        for _ in range(2):  # the second answer comes from the cache when it fitted
            status, headers, body = await fetch("GET", f"{gw}/svc/big?size={size}")
            assert status == 200
            assert int(headers["content-length"]) == size
            assert body == (PATTERN * (size // len(PATTERN) + 1))[:size]


async def test_an_upstream_that_trickles_its_headers_is_cut_off_by_the_attempt_limit() -> None:
    """A byte of header every 0.1 s keeps aiohttp's read-inactivity bound from firing: only
    the hub's own attempt limit ends this attempt."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        with contextlib.suppress(ConnectionError):
            for _ in range(100):
                writer.write(b"z")
                await writer.drain()
                await asyncio.sleep(0.1)
        writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    policy = {"timeout": {"attempt": 0.6, "total": 0}, "retry": {"max_attempts": 1}}
    try:
        async with gateway_for(route("trickle", [f"http://127.0.0.1:{port}"], policy=policy)) as (
            _,
            gw,
        ):
            async with asyncio.timeout(5):  # the trickle would last 10 s
                status, _, body = await fetch("GET", f"{gw}/trickle/x")
            assert status == 504
            assert json.loads(body)["type"] == "/problems/upstream-timeout"
    finally:
        server.close()


async def test_round_robin_spreads_and_failover_hides_a_killed_instance() -> None:
    async with upstreams("a", "b", "c") as up:
        urls = [up[n].url for n in ("a", "b", "c")]
        async with gateway_for(route("svc", urls, policy=FAST)) as (gateway, gw):
            seen = []
            for _ in range(30):
                status, headers, _ = await fetch("GET", f"{gw}/svc/echo")
                assert status == 200
                seen.append(headers["x-instance"])
            assert {n: seen.count(n) for n in "abc"} == {"a": 10, "b": 10, "c": 10}
            up["b"].kill()
            async with aiohttp.ClientSession() as s:
                results = []
                for _ in range(40):
                    async with s.get(f"{gw}/svc/echo") as r:
                        results.append((r.status, r.headers.get("x-instance")))
            assert all(status == 200 for status, _ in results), results
            snapshot = {e["url"]: e for e in gateway.runtimes["svc"].pool.snapshot()}
            assert snapshot[up["b"].url]["ejected"] is True
            assert {inst for _, inst in results} == {"a", "c"}


async def test_large_bodies_stream_both_ways_with_bounded_memory() -> None:
    size = 64 * 1024 * 1024
    async with (
        upstreams("a") as up,
        gateway_for(route("svc", [up["a"].url]), max_body_bytes=size * 2) as (_, gw),
    ):
        tracemalloc.start()
        try:
            digest = hashlib.sha256()
            received = 0
            async with aiohttp.ClientSession() as s, s.get(f"{gw}/svc/big?size={size}") as r:
                assert r.status == 200
                async for chunk in r.content.iter_chunked(1 << 20):
                    digest.update(chunk)
                    received += len(chunk)

            async def upload() -> Any:
                for _ in range(size // len(PATTERN)):
                    yield PATTERN

            status, _, body = await fetch("POST", f"{gw}/svc/echo", data=upload())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert received == size
        assert status == 200
        assert json.loads(body)["body_size"] == size
        assert peak < 24 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB"


async def test_range_requests_pass_through() -> None:
    async with upstreams("a") as up, gateway_for(route("svc", [up["a"].url])) as (_, gw):
        status, headers, body = await fetch(
            "GET", f"{gw}/svc/ranged", headers={"Range": "bytes=10-19"}
        )
        assert status == 206
        assert headers["content-range"] == "bytes 10-19/1000"
        assert body == PATTERN[10:20]


async def test_websocket_upgrade_is_proxied() -> None:
    async with (
        upstreams("a") as up,
        gateway_for(route("svc", [up["a"].url])) as (_, gw),
        aiohttp.ClientSession() as s,
        s.ws_connect(f"{gw.replace('http', 'ws')}/svc/ws", protocols=("echo",)) as ws,
    ):
        assert ws.protocol == "echo"
        await ws.send_str("hello")
        assert (await ws.receive_str()) == "a:hello"
        await ws.send_bytes(b"\x00\x01")
        assert (await ws.receive_bytes()) == b"\x00\x01"


async def test_reload_swaps_valid_tables_and_keeps_serving() -> None:
    async with upstreams("a", "b") as up, gateway_for(route("svc", [up["a"].url])) as (gateway, gw):
        diff = gateway.reload(
            RouteTable.of([route("svc", [up["b"].url]), route("new", [up["a"].url])])
        )
        assert diff.added == ("new",)
        assert diff.changed == ("svc",)
        _, headers, _ = await fetch("GET", f"{gw}/svc/echo")
        assert headers["x-instance"] == "b"
        status, _, _ = await fetch("GET", f"{gw}/new/echo")
        assert status == 200


def test_invalid_tables_are_rejected_with_every_problem() -> None:
    from medianest.errors import ConfigurationError
    from medianest.gateway.table import parse_routes

    bad = {
        "routes": [
            {
                "name": "x",
                "match": {"path_prefix": "/api/"},
                "target": {"instances": [{"url": "http://h"}]},
            },
            {"name": "x", "match": {"path_regex": "^/(unclosed"}, "target": {}},
        ]
    }
    with pytest.raises(ConfigurationError) as info:
        parse_routes(bad, "test")
    message = info.value.message
    assert "overlaps the hub's own paths" in message
    assert "invalid regex" in message
    assert "target needs instances" in message


async def test_consistent_hash_by_header_keeps_a_client_on_one_instance() -> None:
    async with upstreams("a", "b", "c") as up:
        urls = [up[n].url for n in ("a", "b", "c")]
        hashed = route(
            "svc", urls, target={"balance": "consistent_hash", "hash_on": {"header": "X-User"}}
        )
        async with gateway_for(hashed) as (_, gw):
            homes = {}
            for user in ("ann", "bob", "cid", "dee", "eve", "fay"):
                seen = set()
                for _ in range(5):
                    _, headers, _ = await fetch("GET", f"{gw}/svc/x", headers={"X-User": user})
                    seen.add(headers["x-instance"])
                assert len(seen) == 1
                homes[user] = seen.pop()
            assert len(set(homes.values())) > 1


async def test_idempotent_503_fails_over_but_post_is_passed_through() -> None:
    async with upstreams("a", "b") as up:
        urls = [up["a"].url, up["b"].url]
        no_breaker = {**FAST, "breaker": {"enabled": False}}
        async with gateway_for(route("svc", urls, policy=no_breaker), server_timing=True) as (
            _,
            gw,
        ):
            before = [up[n].server.server_state.total_requests for n in ("a", "b")]
            status, headers, body = await fetch("GET", f"{gw}/svc/status/503")
            # Both instances answer 503: the retry tried the other one, then passed it through.
            assert status == 503, (headers, body)
            assert json.loads(body)["instance"] in ("a", "b")
            assert "upstream;dur=" in headers["server-timing"]
            after = [up[n].server.server_state.total_requests for n in ("a", "b")]
            tried = [x - y for x, y in zip(after, before, strict=True)]
            assert sorted(tried) == [1, 2]  # three attempts (the default) spread over both
            status, _, _ = await fetch("POST", f"{gw}/svc/status/503")
            assert status == 503
            hits_before = up["a"].server.server_state.total_requests
            hits_before += up["b"].server.server_state.total_requests
            await fetch("POST", f"{gw}/svc/status/503")
            hits_after = up["a"].server.server_state.total_requests
            hits_after += up["b"].server.server_state.total_requests
            assert hits_after - hits_before == 1  # a POST is sent once, never retried


async def test_plex_xml_becomes_plex_json_through_the_gateway() -> None:
    from medianest.simulators import SimulatorOptions, build_simulator
    from tests.support.servers import serve_asgi

    options = SimulatorOptions(size=20)
    async with serve_asgi(build_simulator("plex", options), lifespan="off") as plex:
        adapter = route(
            "plexjson",
            [plex.url],
            transforms={"plex_xml_to_json": True},
        )
        async with gateway_for(adapter) as (_, gw):
            token = {"X-Plex-Token": options.token}
            status, headers, converted = await fetch(
                "GET", f"{gw}/plexjson/library/sections", headers=token
            )
            assert status == 200
            assert headers["content-type"] == "application/json"
            _, _, native = await fetch(
                "GET",
                f"{plex.url}/library/sections",
                headers={**token, "Accept": "application/json"},
            )
            assert json.loads(converted) == json.loads(native)
