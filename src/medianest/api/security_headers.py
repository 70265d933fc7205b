"""Security headers on every answer of the hub's own endpoints.

* ``X-Content-Type-Options: nosniff`` — browsers take the declared type, so a JSON answer
  carrying user-controlled text is never run as a script or a page;
* ``Referrer-Policy: no-referrer`` — links out of the portal leak no paths or ids;
* ``Content-Security-Policy`` — API answers are data, so nothing may load or run from them
  (``default-src 'none'``) and no site may frame them (``frame-ancestors 'none'``); the
  interactive API docs get the narrow policy their page needs (its script and styles from
  the jsDelivr CDN, FastAPI's favicon, calls back to this origin), still unframeable;
* ``X-Frame-Options: DENY`` — ``frame-ancestors`` for browsers that predate CSP 2;
* ``Cross-Origin-Opener-Policy: same-origin`` and ``Cross-Origin-Resource-Policy:
  same-origin`` — no other origin gets a window handle on, or embeds, the hub's answers.

Proxied gateway answers keep their upstream's own headers (a proxy does not rewrite an
application's policy); routes can add these with response header transforms.
"""

from __future__ import annotations

API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_POLICY = (
    "default-src 'none'; script-src 'self' https://cdn.jsdelivr.net 'unsafe-inline'; "
    "style-src 'self' https://cdn.jsdelivr.net 'unsafe-inline'; "
    "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; "
    "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})

_COMMON: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
API_HEADERS = (*_COMMON, (b"content-security-policy", API_POLICY.encode()))
DOCS_HEADERS = (*_COMMON, (b"content-security-policy", DOCS_POLICY.encode()))


def security_headers(path: str) -> tuple[tuple[bytes, bytes], ...]:
    """The headers for an answer to ``path``."""
    return DOCS_HEADERS if path in DOCS_PATHS else API_HEADERS


def with_security_headers(
    headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...], path: str
) -> list[tuple[bytes, bytes]]:
    """``headers`` plus every security header the handler did not set itself."""
    present = {name.lower() for name, _ in headers}
    return [*headers, *(h for h in security_headers(path) if h[0] not in present)]
