"""What a proxied request and response carry across the gateway.

Hop-by-hop headers (RFC 9110 7.6.1: ``Connection`` and every header it names,
``Keep-Alive``, ``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``) stop
here in both directions. The upstream learns who asked through ``X-Forwarded-For`` (the
client appended to what a trusted proxy said), ``X-Forwarded-Proto``, ``X-Forwarded-Host``
and RFC 7239 ``Forwarded``; ``X-Request-Id`` is the hub's request id; ``traceparent`` passes
through, or is started here. The client's credentials for the *gateway* (an ``mn_`` API key
in ``Authorization`` or ``X-Api-Key``) are not forwarded; other credentials are.
``Host`` is always the upstream's own: nothing the client sends chooses where a request goes.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from opentelemetry import propagate, trace

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NOT_FORWARDED = frozenset({"host", "content-length", "x-forwarded-for", "forwarded"})
Headers = list[tuple[str, str]]


def decode_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]


def new_traceparent() -> str:
    """A W3C trace context started here (no tracer is recording: sampled flag off).

    Trace ids must be unique, not unguessable, so they come from :mod:`random` rather than
    a system call per id. A zero id is invalid in W3C trace context, hence the ``or 1``.
    """
    return f"00-{random.getrandbits(128) or 1:032x}-{random.getrandbits(64) or 1:016x}-00"


def _connection_tokens(headers: Sequence[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _is_gateway_credential(name: str, value: str) -> bool:
    if name == "x-api-key":
        return value.startswith("mn_")
    if name == "authorization":
        scheme, _, token = value.partition(" ")
        return scheme.lower() == "bearer" and token.strip().startswith("mn_")
    return False


def _quote_forwarded(value: str) -> str:
    if ":" in value:  # IPv6 (RFC 7239 section 6: brackets and quotes)
        return f'"[{value}]"'
    return value


def upstream_request_headers(
    headers: Sequence[tuple[str, str]],
    *,
    client_ip: str,
    trusted_forwarded_for: str | None,
    scheme: str,
    host: str | None,
    request_id: str | None,
    content_length: int | None,
) -> Headers:
    """The headers to send upstream for a client request with ``headers`` (one pass over
    them: this runs for every proxied request). A ``traceparent`` the client sent is
    forwarded as it came. Without one, the current OpenTelemetry context is injected when it
    holds a valid span context (a server span); otherwise there is nothing to propagate —
    W3C ``baggage`` included, which the hub never sets on its own — and a new
    ``traceparent`` is started here."""
    tokens = _connection_tokens(headers)
    drop = HOP_BY_HOP | tokens if tokens else HOP_BY_HOP
    traced = False
    out = []
    for k, v in headers:
        name = k.lower()
        if name in drop or name in _NOT_FORWARDED or _is_gateway_credential(name, v):
            continue
        if request_id and name == "x-request-id":
            continue
        traced = traced or name == "traceparent"
        out.append((k, v))
    chain = f"{trusted_forwarded_for}, {client_ip}" if trusted_forwarded_for else client_ip
    out.append(("x-forwarded-for", chain))
    out.append(("x-forwarded-proto", scheme))
    forwarded = f"for={_quote_forwarded(client_ip)};proto={scheme}"
    if host:
        out.append(("x-forwarded-host", host))
        forwarded += f';host="{host}"'
    out.append(("forwarded", forwarded))
    if request_id:
        out.append(("x-request-id", request_id))
    if not traced:
        carrier: dict[str, str] = {}
        if trace.get_current_span().get_span_context().is_valid:
            propagate.inject(carrier)
            out.extend((k.lower(), v) for k, v in carrier.items())
        if "traceparent" not in carrier:
            out.append(("traceparent", new_traceparent()))
    if content_length is not None:
        out.append(("content-length", str(content_length)))
    return out


def downstream_response_headers(headers: Iterable[tuple[str, str]]) -> Headers:
    """Upstream response headers the client may see (hop-by-hop and framing removed)."""
    items = [(k.lower(), v) for k, v in headers]
    drop = HOP_BY_HOP | _connection_tokens(items) | {"server", "date"}
    return [(k, v) for k, v in items if k not in drop]
