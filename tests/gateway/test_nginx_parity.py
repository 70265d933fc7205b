"""The exported nginx configuration routes like the hub: same upstream reached, same status.

One route table (only what nginx can express, plus an API-key route it must hand to the hub)
is served twice: by a full hub (``create_app``) and by nginx running the configuration
``export_nginx`` wrote for it, whose ``mn_hub`` upstream is that same hub. Every case of one
table of requests is sent to both; the answers must agree on the status and, for proxied
answers, on the upstream path and the instance reached.
"""

from __future__ import annotations

import collections
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl

from medianest.app import Hub, create_app
from medianest.config import load_settings
from medianest.config.gateway import Route
from medianest.gateway.nginx import export_nginx, unsupported
from tests.gateway.conftest import route, upstreams
from tests.support.nginx import check_config, main_config, nginx_binary, running_nginx
from tests.support.servers import free_port, serve_asgi

pytestmark = pytest.mark.service("nginx")


@pytest.fixture(scope="session")
def nginx() -> str:
    return nginx_binary()


def parity_routes(a: str, b: str) -> list[Route]:
    """The table both sides serve; ``a`` and ``b`` are the two upstream instances."""
    return [
        route("svc", [a]),
        route("short", [b], match={"path_prefix": "/short"}),
        route(
            "media",
            [a],
            match={"path_regex": r"^/media/(?P<id>[0-9]+)/(?P<kind>[a-z]+)$"},
            strip_prefix=False,
            rewrite={"pattern": r"^/media/([0-9]+)/([a-z]+)$", "replacement": r"/items/\2/\1"},
        ),
        route(
            "art",
            [b],
            match={"path_regex": r"^/art/[a-z]+/[0-9]+$"},
            strip_prefix=False,
            rewrite={
                "pattern": r"^/art/(?P<kind>[a-z]+)/(?P<id>[0-9]+)$",
                "replacement": r"/images/\g<id>/\g<kind>",
            },
        ),
        route(
            "legacy",
            [a],
            match={"path_prefix": "/v1/"},
            strip_prefix=False,
            rewrite={"pattern": "^/v1/", "replacement": "/v2/"},
        ),
        route("ro", [b], match={"path_prefix": "/ro/", "methods": ["GET"]}),
        route("ro-write", [a], match={"path_prefix": "/ro/", "methods": ["POST"]}),
        route(
            "w",
            [],
            target={
                "instances": [{"url": a, "weight": 3}, {"url": b, "weight": 1}],
                "balance": "weighted_round_robin",
            },
        ),
        route(
            "hdr",
            [a],
            transforms={
                "request_headers": {"set": {"X-Tenant": "home"}, "remove": ["X-Drop-Me"]},
                "response_headers": {"set": {"X-Served-By": "edge"}, "remove": ["X-Instance"]},
            },
        ),
        route("private", [a], auth={"required": True}),
        route("limited", [b], rate_limits=[{"limit": "3/minute"}]),
    ]


@dataclass
class Stack:
    hub: str
    nginx: str
    key: str
    """An API key of the hub (no scopes)."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    echo: dict[str, Any] | None

    @property
    def instance(self) -> str | None:
        if self.echo is not None and "instance" in self.echo:
            return str(self.echo["instance"])
        return self.headers.get("x-instance")


@contextlib.asynccontextmanager
async def parity_stack(nginx: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with upstreams("a", "b") as up:
        routes = parity_routes(up["a"].url, up["b"].url)
        assert unsupported(next(r for r in routes if r.name == "private"))
        assert not any(unsupported(r) for r in routes if r.name != "private")
        settings = load_settings(
            overrides={
                "data_dir": str(tmp_path / "data"),
                "gateway": {"routes": [r.model_dump(mode="json") for r in routes]},
            }
        )
        hub = Hub(settings)
        app = create_app(settings, hub=hub, configure_logs=False)
        async with serve_asgi(app) as hub_server:
            assert hub.api_keys is not None
            _, key = await hub.api_keys.create("parity", "tester", ())
            port = free_port()
            exported = tmp_path / "gateway.conf"
            exported.write_text(
                export_nginx(routes, hub=f"127.0.0.1:{hub_server.port}", listen=f"127.0.0.1:{port}")
            )
            main_config(tmp_path, exported)
            async with running_nginx(nginx, tmp_path, port) as proxy:
                yield Stack(hub_server.url, proxy.url, key)


async def ask(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    target = yarl.URL(url, encoded=True)  # sent as written: no dot-segment cleanup
    async with session.request(
        method, target, headers=headers, data=body, allow_redirects=False
    ) as response:
        raw = await response.read()
        echo = None
        if response.content_type == "application/json" and raw:
            with contextlib.suppress(ValueError):
                parsed = json.loads(raw)
                echo = parsed if isinstance(parsed, dict) else None
        return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, echo)


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    status: int
    instances: tuple[str, ...] = ()
    """Instances that may answer (empty: not an upstream answer, e.g. the hub's own 404)."""
    upstream_path: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    key: bool = False
    """Send the API key created for the test."""


CASES = [
    # prefix with strip_prefix
    Case("GET", "/svc/items/7?x=1", 200, ("a",), "/items/7"),
    Case("GET", "/svc/", 200, ("a",), "/"),
    Case("GET", "/svc", 200, ("a",), "/"),
    Case("POST", "/svc/upload", 200, ("a",), "/upload", body=b"x" * 5000),
    Case("GET", "/svc/status/404", 404, ("a",)),
    Case("GET", "/svc/status/503", 503, ("a",)),
    # a prefix without a trailing slash, stripped
    Case("GET", "/short/x", 200, ("b",), "/x"),
    Case("GET", "/shortcut", 200, ("b",), "/cut"),
    Case("GET", "/short", 200, ("b",), "/"),
    # regex match and rewrites with numbered and named groups, and a partial pattern
    Case("GET", "/media/42/poster", 200, ("a",), "/items/poster/42"),
    Case("GET", "/media/abc/poster", 404),
    Case("GET", "/art/fanart/9", 200, ("b",), "/images/9/fanart"),
    Case("GET", "/v1/library/sections?type=1", 200, ("a",), "/v2/library/sections"),
    # method restriction: another method is not the route's; the hub answers for it
    # (the route ro-write on the same prefix takes POST; nothing takes the others: 404)
    Case("GET", "/ro/list", 200, ("b",), "/list"),
    Case("HEAD", "/ro/list", 404),
    Case("POST", "/ro/list", 200, ("a",), "/list", body=b"y" * 70000),
    Case("PATCH", "/ro/list", 404, body=b"{}"),
    Case("DELETE", "/ro/list", 404),
    # weighted instances
    Case("GET", "/w/x", 200, ("a", "b"), "/x"),
    Case("PUT", "/w/y", 200, ("a", "b"), "/y", body=b"put"),
    # header edits
    Case("GET", "/hdr/x", 200, ("a",), "/x", headers=(("X-Drop-Me", "1"),)),
    # API-key auth: nginx cannot check keys, so it hands the route to the hub
    Case("GET", "/private/x", 401),
    Case("GET", "/private/x", 401, headers=(("X-Api-Key", "mn_garbage"),)),
    Case("GET", "/private/x", 200, ("a",), "/x", key=True),
    # paths the hub refuses rather than route: encoded slashes, dot segments
    Case("GET", "/svc/a%20b", 200, ("a",), "/a b"),
    Case("GET", "/svc/a%2Fb", 400),
    Case("GET", "/svc/a%5cb", 400),
    Case("GET", "/svc/x/%2e%2e/y", 400),
    Case("GET", "/private/%2E%2E/svc/x", 400),
    Case("GET", "/svc/x?next=%2F..%2F", 200, ("a",), "/x"),
    # not a route: both end at the hub
    Case("GET", "/nowhere", 404),
    Case("POST", "/nowhere/deeper", 404, body=b"{}"),
    Case("GET", "/health", 200),
]


def _describe(case: Case) -> str:
    return f"{case.method} {case.path}{' +key' if case.key else ''}"


async def test_nginx_routes_like_the_hub(nginx: str, tmp_path: Path) -> None:
    problems: list[str] = []
    async with parity_stack(nginx, tmp_path) as stack, aiohttp.ClientSession() as session:
        for case in CASES:
            headers = dict(case.headers)
            if case.key:
                headers["X-Api-Key"] = stack.key
            answers = {}
            for side, base in (("hub", stack.hub), ("nginx", stack.nginx)):
                answers[side] = await ask(
                    session, case.method, base + case.path, headers, case.body
                )
            hub, ngx = answers["hub"], answers["nginx"]
            where = _describe(case)
            for side, answer in answers.items():
                if answer.status != case.status:
                    problems.append(f"{where}: {side} answered {answer.status}, not {case.status}")
            if hub.status != ngx.status:
                problems.append(f"{where}: hub {hub.status} but nginx {ngx.status}")
            for side, answer in answers.items():
                reached = answer.instance
                if case.instances and case.method != "HEAD":
                    if reached not in case.instances:
                        problems.append(
                            f"{where}: {side} reached {reached!r}, not {case.instances}"
                        )
                elif not case.instances and reached is not None:
                    problems.append(f"{where}: {side} reached upstream {reached!r}")
                if case.upstream_path is not None and case.status == 200:
                    seen = (answer.echo or {}).get("path")
                    if seen != case.upstream_path:
                        problems.append(f"{where}: {side} sent {seen!r}, not {case.upstream_path}")
            if case.status == 200 and hub.echo and ngx.echo:
                if hub.echo.get("path") != ngx.echo.get("path"):
                    problems.append(
                        f"{where}: paths {hub.echo.get('path')} / {ngx.echo.get('path')}"
                    )
                if hub.echo.get("query") != ngx.echo.get("query"):
                    problems.append(f"{where}: queries differ")
                if hub.echo.get("body_sha256") != ngx.echo.get("body_sha256"):
                    problems.append(f"{where}: bodies differ")
    assert not problems, "\n".join(problems)


async def test_weighted_instances_share_traffic_alike(nginx: str, tmp_path: Path) -> None:
    async with parity_stack(nginx, tmp_path) as stack, aiohttp.ClientSession() as session:
        shares = {}
        for side, base in (("hub", stack.hub), ("nginx", stack.nginx)):
            reached = [(await ask(session, "GET", f"{base}/w/x")).instance for _ in range(12)]
            shares[side] = collections.Counter(reached)
        assert shares["hub"] == shares["nginx"] == {"a": 9, "b": 3}


async def test_per_ip_rate_limit_refuses_alike(nginx: str, tmp_path: Path) -> None:
    async with parity_stack(nginx, tmp_path) as stack, aiohttp.ClientSession() as session:
        for base in (stack.hub, stack.nginx):
            statuses = [(await ask(session, "GET", f"{base}/limited/x")).status for _ in range(5)]
            assert statuses == [200, 200, 200, 429, 429], base


async def test_header_edits_and_gateway_credentials_alike(nginx: str, tmp_path: Path) -> None:
    async with parity_stack(nginx, tmp_path) as stack, aiohttp.ClientSession() as session:
        for base in (stack.hub, stack.nginx):
            answer = await ask(
                session,
                "GET",
                f"{base}/hdr/x",
                {"X-Drop-Me": "1", "X-Tenant": "guest", "X-Api-Key": stack.key},
            )
            assert answer.status == 200
            sent = {k.lower(): v for k, v in answer.echo["headers"]}  # type: ignore[index]
            assert sent["x-tenant"] == "home", base
            assert "x-drop-me" not in sent, base
            assert "x-api-key" not in sent, base
            assert answer.headers["x-served-by"] == "edge", base
            assert "x-instance" not in answer.headers, base
            answer = await ask(
                session, "GET", f"{base}/svc/x", {"Authorization": f"Bearer {stack.key}"}
            )
            sent = {k.lower(): v for k, v in answer.echo["headers"]}  # type: ignore[index]
            assert "authorization" not in sent, base
            answer = await ask(session, "GET", f"{base}/svc/x", {"Authorization": "Basic dTpw"})
            sent = {k.lower(): v for k, v in answer.echo["headers"]}  # type: ignore[index]
            assert sent["authorization"] == "Basic dTpw", base


def every_directive_routes() -> list[Route]:
    """A table that makes the exporter write each directive it knows."""
    a, b = "http://127.0.0.1:9001", "http://127.0.0.1:9002"
    fast = {"timeout": {"attempt": 2.5, "total": 7.0}, "retry": {"max_attempts": 3}}
    return [
        route("rr", [a, b], policy=fast, retry_unsafe=True),
        route("least", [a, b], target={"balance": "least_outstanding"}),
        route(
            "by-header",
            [a, b],
            target={"balance": "consistent_hash", "hash_on": {"header": "X-User-Id"}},
        ),
        route(
            "by-cookie",
            [a, b],
            target={"balance": "consistent_hash", "hash_on": {"cookie": "session"}},
        ),
        route(
            "by-ip",
            [a, b],
            target={"balance": "consistent_hash", "hash_on": {"client": "ip"}},
            rate_limits=[
                {"limit": "10/second"},
                {"limit": "600/minute", "strategy": "fixed_window"},
                {"limit": "1000/hour"},
            ],
        ),
        route(
            "rewrite",
            [a],
            match={"path_regex": r"^/rw/(?P<id>[0-9]+)$", "methods": ["GET", "POST"]},
            strip_prefix=False,
            rewrite={"pattern": r"^/rw/(?P<id>[0-9]+)$", "replacement": r"/item/\g<id>"},
        ),
        route(
            "edits",
            [a],
            match={"path_prefix": "/edits"},
            transforms={
                "request_headers": {
                    "set": {"X-Set": 'say "hi"'},
                    "add": {"X-Add": "1"},
                    "remove": ["Cookie"],
                },
                "response_headers": {
                    "set": {"Cache-Control": "no-store"},
                    "add": {"X-Add": "2"},
                    "remove": ["Server"],
                },
            },
        ),
        route("based", [f"{a}/base/", f"{b}/base"], rate_limits=[{"limit": "5/second;99/day"}]),
        route("split", [f"{a}/one", f"{b}/two"]),
        route("keyed", [a], auth={"required": True, "scopes": ["media:read"]}),
        route("per-key", [a], rate_limits=[{"limit": "5/minute", "per": "key"}]),
        route("moving", [a], rate_limits=[{"limit": "5/minute", "strategy": "moving_window"}]),
        route(
            "by-key",
            [a, b],
            target={"balance": "consistent_hash", "hash_on": {"client": "key"}},
        ),
        route("json", [a], transforms={"json_body": {"remove": ["secret"]}}),
        route("plexxml", [a], transforms={"plex_xml_to_json": True}),
        route("cached", [a], cache={"ttl": 5, "stale_if_error": 60}),
        route("beta", [a], match={"path_prefix": "/beta/", "headers": {"X-Beta": "1"}}),
        route("host", [a], match={"path_prefix": "/host/", "host": "media.example"}),
        route("host-two", [b], match={"path_prefix": "/host/", "methods": ["POST"]}),
    ]


def test_nginx_accepts_every_exported_directive(nginx: str, tmp_path: Path) -> None:
    routes = every_directive_routes()
    text = export_nginx(routes, hub="127.0.0.1:9000", listen="127.0.0.1:9080")
    for directive in (
        "least_conn;",
        "hash $http_x_user_id consistent;",
        "hash $cookie_session consistent;",
        "hash $remote_addr consistent;",
        "limit_req_zone $binary_remote_addr zone=mn_by_ip_0:10m rate=10r/s;",
        "limit_req_zone $binary_remote_addr zone=mn_by_ip_2:10m rate=17r/m;",
        "limit_req zone=mn_by_ip_1 burst=599 nodelay;",
        "rewrite ",
        "add_header Cache-Control",
        "proxy_hide_header Server;",
        "proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;",
        "proxy_next_upstream_timeout 7000ms;",
        "proxy_read_timeout 2500ms;",
        "weight=",
        'rewrite "^/based/?(.*)$" "/base/$1" break;',
        "limit_req zone=mn_based_1 burst=98 nodelay;",
        "if ($request_method !~ ^(?:GET|POST)$) { return 418; }",
    ):
        assert directive in text, directive
    assert "# route host-two: same paths as route host" in text
    for name in (
        "split",
        "keyed",
        "per-key",
        "moving",
        "by-key",
        "json",
        "plexxml",
        "cached",
        "beta",
        "host",
    ):
        assert f"# route {name}: served by the hub" in text, name
    exported = tmp_path / "gateway.conf"
    exported.write_text(text)
    main_config(tmp_path, exported)
    result = check_config(nginx, tmp_path)
    assert result.returncode == 0, result.stderr + "\n" + text
