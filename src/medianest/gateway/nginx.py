"""Export the route table as an nginx configuration, for deployments that outgrow one process.

nginx takes what it can express: upstream blocks with weights and the balancing method
(round robin, ``least_conn``, ``hash ... consistent`` on a header, cookie or client address),
per-attempt timeouts, ``proxy_next_upstream`` failover (non-idempotent methods only when the
route says ``retry_unsafe``), ``limit_req`` zones for per-IP limits, header edits, prefix
stripping and regex rewrites, WebSocket upgrades and forwarded headers. A route that needs
something nginx cannot do (API-key auth, scopes, per-key or per-user limits, consistent hash
by API key, JSON body edits, the Plex XML adapter, the stale-if-error cache) is sent to the
hub instead, with a comment naming what could not be expressed, so behaviour is never
silently weaker than the hub's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from limits import parse_many

from medianest.config.gateway import Route

_IDENT = re.compile(r"[^a-zA-Z0-9_]")


def _ident(name: str) -> str:
    return "mn_" + _IDENT.sub("_", name)


def unsupported(route: Route) -> list[str]:
    """What of ``route`` nginx cannot express (empty: nginx can serve it alone)."""
    why = []
    if route.auth.required:
        why.append("API-key authentication" + (" and scopes" if route.auth.scopes else ""))
    for limit in route.rate_limits:
        if limit.per != "ip":
            why.append(f"rate limit per {limit.per}")
        if limit.strategy == "moving_window":
            why.append("moving-window rate limit")
    if route.target.hash_on is not None and route.target.hash_on.client == "key":
        why.append("consistent hash by API key")
    if route.transforms.json_body is not None:
        why.append("JSON body edits")
    if route.transforms.plex_xml_to_json:
        why.append("Plex XML to JSON")
    if route.cache is not None:
        why.append("response cache with stale-if-error")
    if route.target.service is not None and not route.target.instances:
        why.append("instances from service discovery")
    return why


def _q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _upstream(route: Route) -> list[str]:
    lines = [f"upstream {_ident(route.name)} {{"]
    target = route.target
    if target.balance == "least_outstanding":
        lines.append("    least_conn;")
    elif target.balance == "consistent_hash" and target.hash_on is not None:
        h = target.hash_on
        key = (
            f"$http_{h.header.lower().replace('-', '_')}"
            if h.header
            else f"$cookie_{h.cookie}"
            if h.cookie
            else "$remote_addr"
        )
        lines.append(f"    hash {key} consistent;")
    for instance in target.instances:
        parts = urlsplit(str(instance.url))
        weight = f" weight={instance.weight}" if target.balance != "round_robin" else ""
        outlier = target.outlier
        lines.append(
            f"    server {parts.hostname}:{parts.port or 80}{weight}"
            f" max_fails={outlier.consecutive_failures} fail_timeout={int(outlier.base_ejection)}s;"
        )
    lines += ["    keepalive 32;", "}"]
    return lines


def _limit_zones(route: Route) -> list[str]:
    zones = []
    for index, limit in enumerate(route.rate_limits):
        item = parse_many(limit.limit)[0]
        per = {1: "s", 60: "m"}.get(item.get_expiry())
        amount = item.amount if per else max(1, round(item.amount * 60 / item.get_expiry()))
        unit = per or "m"
        zones.append(
            f"limit_req_zone $binary_remote_addr zone={_ident(route.name)}_{index}:10m "
            f"rate={amount}r/{unit};"
        )
    return zones


def _location(route: Route) -> list[str]:
    m = route.match
    if m.path_prefix is not None:
        head = f"location {m.path_prefix} {{"
    else:
        head = f"location ~ {_q(m.path_regex or '')} {{"
    lines = [head]
    if set(m.methods) != {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}:
        lines.append(f"    limit_except {' '.join(m.methods)} {{ deny all; }}")
    for index, limit in enumerate(route.rate_limits):
        burst = parse_many(limit.limit)[0].amount
        lines.append(f"    limit_req zone={_ident(route.name)}_{index} burst={burst} nodelay;")
        lines.append("    limit_req_status 429;")
    target = f"http://{_ident(route.name)}"
    if route.rewrite is not None:
        replacement = re.sub(r"\\(\d)", r"$\1", route.rewrite.replacement)
        lines.append(f"    rewrite {_q(route.rewrite.pattern)} {_q(replacement)} break;")
        lines.append(f"    proxy_pass {target};")
    elif route.strip_prefix and m.path_prefix is not None:
        lines.append(
            f"    proxy_pass {target}/;"
            if m.path_prefix.endswith("/")
            else f"    proxy_pass {target};"
        )
    else:
        lines.append(f"    proxy_pass {target};")
    policy = route.policy
    attempt = policy.timeout.attempt or 60
    tries = policy.retry.max_attempts if policy.retry.enabled else 1
    conditions = "error timeout http_502 http_503 http_504"
    if route.retry_unsafe:
        conditions += " non_idempotent"
    lines += [
        "    proxy_http_version 1.1;",
        "    proxy_set_header Host $proxy_host;",
        "    proxy_set_header Upgrade $http_upgrade;",
        "    proxy_set_header Connection $connection_upgrade;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_set_header X-Forwarded-Host $http_host;",
        '    proxy_set_header Forwarded "for=$remote_addr;proto=$scheme";',
        "    proxy_set_header X-Request-Id $request_id;",
        "    proxy_buffering off;",
        "    proxy_request_buffering off;",
        f"    proxy_connect_timeout {attempt:g}s;",
        f"    proxy_read_timeout {attempt:g}s;",
        f"    proxy_next_upstream {conditions};",
        f"    proxy_next_upstream_tries {max(tries, len(route.target.instances))};",
    ]
    if policy.timeout.total:
        lines.append(f"    proxy_next_upstream_timeout {policy.timeout.total:g}s;")
    edits = route.transforms
    for name, value in {**edits.request_headers.set, **edits.request_headers.add}.items():
        lines.append(f"    proxy_set_header {name} {_q(value)};")
    for name in edits.request_headers.remove:
        lines.append(f'    proxy_set_header {name} "";')
    for name in edits.response_headers.remove + tuple(edits.response_headers.set):
        lines.append(f"    proxy_hide_header {name};")
    for name, value in {**edits.response_headers.set, **edits.response_headers.add}.items():
        lines.append(f"    add_header {name} {_q(value)} always;")
    lines.append("}")
    return lines


def _to_hub(route: Route, reasons: list[str]) -> list[str]:
    m = route.match
    head = (
        f"location {m.path_prefix} {{"
        if m.path_prefix
        else f"location ~ {_q(m.path_regex or '')} {{"
    )
    return [
        f"# route {route.name}: served by the hub; nginx cannot express: {', '.join(reasons)}",
        head,
        "    proxy_pass http://mn_hub;",
        "    proxy_http_version 1.1;",
        "    proxy_set_header Host $http_host;",
        "    proxy_set_header Upgrade $http_upgrade;",
        "    proxy_set_header Connection $connection_upgrade;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_buffering off;",
        "    proxy_request_buffering off;",
        "}",
    ]


def export_nginx(
    routes: Sequence[Route],
    *,
    hub: str = "127.0.0.1:8080",
    listen: str = "80",
    max_body_bytes: int = 10 * 1_048_576,
    max_header_bytes: int = 16_384,
) -> str:
    """An ``http {}``-level nginx configuration (include it from nginx.conf's http block)."""
    out = [
        "# Generated by `medianest gateway export nginx`. Include inside nginx's http { } block.",
        "map $http_upgrade $connection_upgrade { default upgrade; '' ''; }",
        "upstream mn_hub {",
        f"    server {hub};",
        "    keepalive 32;",
        "}",
    ]
    served = []
    for route in routes:
        reasons = unsupported(route)
        if reasons:
            served.append(_to_hub(route, reasons))
            continue
        out += _upstream(route)
        out += _limit_zones(route)
        served.append(_location(route))
    header_kb = max(1, max_header_bytes // 1024)
    out += [
        "server {",
        f"    listen {listen};",
        f"    client_max_body_size {max_body_bytes};",
        f"    large_client_header_buffers 4 {header_kb}k;",
        "    merge_slashes off;",
    ]
    for block in served:
        out += ["    " + line for line in block]
    out += [
        "    # Everything else (the hub's own API, /health, /ready...) goes to the hub.",
        "    location / {",
        "        proxy_pass http://mn_hub;",
        "        proxy_http_version 1.1;",
        "        proxy_set_header Host $http_host;",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    }",
        "}",
    ]
    return "\n".join(out) + "\n"
