"""Export the route table as an nginx configuration, for deployments that outgrow one process.

nginx takes what it can express: upstream blocks with weights and the balancing method
(round robin, ``least_conn``, ``hash ... consistent`` on a header, cookie or client address),
per-attempt timeouts, ``proxy_next_upstream`` failover (non-idempotent methods only when the
route says ``retry_unsafe``), ``limit_req`` zones for per-IP limits, header edits, prefix
stripping and regex rewrites (with the hub's ``re.sub`` meaning), a base path shared by the
instances, WebSocket upgrades and forwarded headers; gateway API keys (``mn_...``) are not
forwarded, as the hub does not forward them. A route that needs something nginx cannot do
(API-key auth, scopes, per-key or per-user limits, consistent hash by API key, JSON body
edits, the Plex XML adapter, the stale-if-error cache, matching on Host or headers) is sent
to the hub instead, with a comment naming what could not be expressed, so behaviour is never
silently weaker than the hub's.

Whatever a route's location does not take (a method the route does not accept) and every
path the hub refuses (encoded slashes, dot segments) is handed to the hub too, through
``error_page 418 = @mn_hub``, so that the hub's answer (another route, a 404, a 400) is the
answer: nginx's own 403, 301 or path normalisation never differs from it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from limits import parse_many

from medianest.config.gateway import HTTP_METHODS, Route

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
    if route.match.host is not None:
        why.append("match on Host")
    if route.match.headers:
        why.append("match on request headers")
    if len({_base_path(i.url) for i in route.target.instances}) > 1:
        why.append("instances with different base paths")
    if route.rewrite is not None and _rewrite(route) is None:
        why.append("this rewrite (more than 8 groups, `$` or a backreference)")
    return why


def _base_path(url: object) -> str:
    return urlsplit(str(url)).path.rstrip("/")


def _unnamed(pattern: str) -> str:
    """``pattern`` with Python's named groups made plain groups (same numbers).

    nginx turns every named capture into a variable, which must not clash with its own
    (``$host``, ``$uri``...); the exported directives only ever use group numbers.
    """
    return re.sub(r"\(\?P<[A-Za-z_][A-Za-z0-9_]*>", "(", pattern)


def _rewrite(route: Route) -> tuple[str, str] | None:
    """The ``rewrite`` regex and replacement doing what the hub does, or None.

    The hub substitutes the first match of the pattern anywhere in the path (``re.sub``
    with ``count=1``), keeping what surrounds it, whereas nginx replaces the whole URI; so
    the pattern is wrapped in a leading group (``$1``) and a trailing one (``$mn_tail``),
    and the replacement's groups, numbered or named, become ``$2``..``$9``.
    """
    assert route.rewrite is not None
    pattern, replacement = route.rewrite.pattern, route.rewrite.replacement
    if "$" in replacement or "?" in replacement or "(?P=" in pattern:
        return None
    groups = re.compile(pattern).groupindex

    def group(found: re.Match[str]) -> str:
        name, number, escaped = found.groups()
        if escaped is not None:
            return escaped
        index = int(number or name) if (number or name.isdigit()) else groups[name]
        if not 0 < index < 9:
            raise ValueError(index)
        return f"${index + 1}"

    try:
        body = re.sub(r"\\(?:g<([^>]*)>|([0-9]{1,2})|(.))", group, replacement)
    except (ValueError, KeyError):
        return None
    return f"^(.*?)(?:{_unnamed(pattern)})(?<mn_tail>.*)$", f"$1{body}$mn_tail"


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


def _limits(route: Route) -> list[tuple[str, int, str]]:
    """Zone name, burst and rate of every limit of the route (``a;b`` is two limits).

    ``limit_req`` lets one request plus ``burst`` through at once, so ``N/minute`` is a burst
    of N - 1: the N+1st request in the window is refused, as by the hub.
    """
    out = []
    items = [item for limit in route.rate_limits for item in parse_many(limit.limit)]
    for index, item in enumerate(items):
        per = {1: "s", 60: "m"}.get(item.get_expiry())
        amount = item.amount if per else max(1, round(item.amount * 60 / item.get_expiry()))
        zone = f"{_ident(route.name)}_{index}"
        out.append((zone, item.amount - 1, f"{amount}r/{per or 'm'}"))
    return out


def _limit_zones(route: Route) -> list[str]:
    return [
        f"limit_req_zone $binary_remote_addr zone={zone}:10m rate={rate};"
        for zone, _, rate in _limits(route)
    ]


def _heads(route: Route) -> list[str]:
    """The location(s) taking the route's paths.

    A prefix ending in ``/`` also gets an exact location for the prefix without it: the hub
    serves ``/plex`` on the route ``/plex/``, where nginx would answer a 301 to ``/plex/``.
    """
    m = route.match
    if m.path_prefix is None:
        return [f"location ~ {_q(_unnamed(m.path_regex or ''))}"]
    heads = [f"location {m.path_prefix}"]
    if len(m.path_prefix) > 1 and m.path_prefix.endswith("/"):
        heads.append(f"location = {m.path_prefix.rstrip('/')}")
    return heads


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _location(route: Route) -> list[str]:
    """The body of a location that nginx serves itself."""
    m = route.match
    lines = []
    if set(m.methods) != set(HTTP_METHODS):
        # Another method is not this route's: the hub decides (another route, or 404/405).
        lines.append(f"    if ($request_method !~ ^(?:{'|'.join(m.methods)})$) {{ return 418; }}")
    for zone, burst, _ in _limits(route):
        lines.append(f"    limit_req zone={zone} burst={burst} nodelay;")
    if route.rate_limits:
        lines.append("    limit_req_status 429;")
    instances = route.target.instances
    base = _base_path(instances[0].url) if instances else ""
    rewrite = _rewrite(route) if route.rewrite is not None else None
    if rewrite is not None:
        lines.append(f"    rewrite {_q(rewrite[0])} {_q(base + rewrite[1])} break;")
    elif route.strip_prefix and m.path_prefix is not None:
        pattern = f"^{re.escape(m.path_prefix.rstrip('/'))}/?(.*)$"
        lines.append(f"    rewrite {_q(pattern)} {_q(base + '/$1')} break;")
    elif base:
        lines.append(f"    rewrite ^(.*)$ {_q(base + '$1')} break;")
    lines.append(f"    proxy_pass http://{_ident(route.name)};")
    policy = route.policy
    attempt = policy.timeout.attempt or 60
    tries = policy.retry.max_attempts if policy.retry.enabled else 1
    conditions = "error timeout http_502 http_503 http_504"
    if route.retry_unsafe:
        conditions += " non_idempotent"
    host = urlsplit(str(instances[0].url)).netloc.rpartition("@")[2] if len(instances) == 1 else ""
    lines += [
        "    proxy_http_version 1.1;",
        f"    proxy_set_header Host {host or '$proxy_host'};",
        "    proxy_set_header Upgrade $http_upgrade;",
        "    proxy_set_header Connection $connection_upgrade;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_set_header X-Forwarded-Host $http_host;",
        '    proxy_set_header Forwarded "for=$remote_addr;proto=$scheme";',
        "    proxy_set_header X-Request-Id $request_id;",
        "    proxy_buffering off;",
        "    proxy_request_buffering off;",
        f"    proxy_connect_timeout {_ms(attempt)};",
        f"    proxy_read_timeout {_ms(attempt)};",
        f"    proxy_next_upstream {conditions};",
        f"    proxy_next_upstream_tries {max(tries, len(instances))};",
    ]
    if policy.timeout.total:
        lines.append(f"    proxy_next_upstream_timeout {_ms(policy.timeout.total)};")
    edits = route.transforms
    request = edits.request_headers
    edited = {n.lower() for n in (*request.set, *request.add, *request.remove)}
    # The client's credentials for the gateway (mn_ API keys) never reach an upstream.
    for name, variable in (("X-Api-Key", "$mn_x_api_key"), ("Authorization", "$mn_authorization")):
        if name.lower() not in edited:
            lines.append(f"    proxy_set_header {name} {variable};")
    for name, value in {**request.set, **request.add}.items():
        lines.append(f"    proxy_set_header {name} {_q(value)};")
    for name in request.remove:
        lines.append(f'    proxy_set_header {name} "";')
    for name in edits.response_headers.remove + tuple(edits.response_headers.set):
        lines.append(f"    proxy_hide_header {name};")
    for name, value in {**edits.response_headers.set, **edits.response_headers.add}.items():
        lines.append(f"    add_header {name} {_q(value)} always;")
    return lines


_REFUSED = r"^[^?]*(%2f|%5c|\\|%[01][0-9a-f]|%7f|/(\.|%2e){1,2}(/|\?|$))"
_TO_HUB = [
    "    proxy_pass http://mn_hub;",
    "    proxy_http_version 1.1;",
    "    proxy_set_header Host $http_host;",
    "    proxy_set_header Upgrade $http_upgrade;",
    "    proxy_set_header Connection $connection_upgrade;",
    "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    "    proxy_set_header X-Forwarded-Proto $scheme;",
    "    proxy_buffering off;",
    "    proxy_request_buffering off;",
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
        "map $http_x_api_key $mn_x_api_key { ~^mn_ ''; default $http_x_api_key; }",
        "map $http_authorization $mn_authorization {",
        "    '~*^bearer\\s+mn_' '';",
        "    default $http_authorization;",
        "}",
        "upstream mn_hub {",
        f"    server {hub};",
        "    keepalive 32;",
        "}",
    ]
    served: list[str] = []
    taken: dict[str, str] = {}
    for route in routes:
        heads = [h for h in _heads(route) if h not in taken]
        if not heads:
            first = taken[_heads(route)[0]]
            served.append(
                f"# route {route.name}: same paths as route {first}, whose location sends "
                "what it does not take to the hub"
            )
            continue
        taken.update((h, route.name) for h in heads)
        reasons = unsupported(route)
        if reasons:
            served.append(
                f"# route {route.name}: served by the hub; "
                f"nginx cannot express: {', '.join(reasons)}"
            )
            body = _TO_HUB
        else:
            out += _upstream(route)
            out += _limit_zones(route)
            body = _location(route)
        for head in heads:
            served += [f"{head} {{", *body, "}"]
    header_kb = max(1, max_header_bytes // 1024)
    out += [
        "server {",
        f"    listen {listen};",
        f"    client_max_body_size {max_body_bytes};",
        f"    large_client_header_buffers 4 {header_kb}k;",
        "    merge_slashes off;",
        "    # 418 is never an answer: it hands the request to the hub, which decides.",
        "    error_page 418 = @mn_hub;",
        "    # Paths the hub refuses (encoded slash or backslash, dot segment, control character),",
        "    # where nginx would decode and resolve them, go to the hub as sent: it answers 400.",
        f"    if ($request_uri ~* {_q(_REFUSED)}) {{ return 418; }}",
    ]
    out += ["    " + line for line in served]
    out += [
        "    # What a route's location does not take (another method...) goes to the hub.",
        "    location @mn_hub {",
        *("    " + line for line in _TO_HUB),
        "    }",
        "    # Everything else (the hub's own API, /health, /ready...) goes to the hub.",
        "    location / {",
        *("    " + line for line in _TO_HUB),
        "    }",
        "}",
    ]
    return "\n".join(out) + "\n"
