"""A real OpenID provider for tests: panva/oidc-provider under Node.js, on a free port.

``provider.mjs`` in this folder runs the provider; ``package-lock.json`` pins it. The first
use runs ``npm ci`` here when ``node_modules`` is missing. Without Node.js/npm (or when the
install fails) the test is skipped with the reason, or failed under
``MEDIANEST_REQUIRE_SERVICES=1``.

The signing keys are made here (joserfc) and handed to the provider, so tests know them:
they can sign tokens "as the provider" with bad claims, and rotate keys (:meth:`rotate`)
on the running provider to exercise a relying party's refetch on an unknown ``kid``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey, import_key

from tests.support.services import services_required

PROVIDER_DIR = Path(__file__).resolve().parent
REDIRECT_URI = "https://medianest.test/api/v1/auth/oidc/callback"
# ':' and '+' make sure client_secret_basic form-encodes the secret (RFC 6749 §2.3.1).
CLIENT_SECRET = "medianest-test-secret:with+odd/characters"
MIN_NODE_MAJOR = 20


@dataclass(frozen=True)
class TestClient:
    """A client registered at the test provider."""

    client_id: str
    auth_method: str
    alg: str

    @property
    def secret(self) -> str | None:
        return None if self.auth_method == "none" else CLIENT_SECRET

    def metadata(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "client_id": self.client_id,
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": self.auth_method,
            "id_token_signed_response_alg": self.alg,
        }
        if self.secret is not None:
            data["client_secret"] = self.secret
        return data


CLIENTS = {
    "basic": TestClient("medianest", "client_secret_basic", "RS256"),
    "post": TestClient("medianest-post", "client_secret_post", "PS256"),
    "public": TestClient("medianest-public", "none", "ES256"),
    "eddsa": TestClient("medianest-eddsa", "client_secret_basic", "EdDSA"),
}


def signing_keys(prefix: str) -> dict[str, Any]:
    """A private JWKS with one RSA, one P-256 and one Ed25519 key, kids ``<prefix>-rsa``..."""
    keys: list[RSAKey | ECKey | OKPKey] = [
        RSAKey.generate_key(2048, parameters={"kid": f"{prefix}-rsa", "use": "sig"}),
        ECKey.generate_key("P-256", parameters={"kid": f"{prefix}-ec", "use": "sig"}),
        OKPKey.generate_key("Ed25519", parameters={"kid": f"{prefix}-ed", "use": "sig"}),
    ]
    return {"keys": [key.as_dict(private=True) for key in keys]}


def _unavailable(reason: str) -> NoReturn:
    if services_required():
        pytest.fail(f"{reason} and MEDIANEST_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(reason)


def node_binary() -> str:
    """``node`` (Node.js 20+), with the provider's packages installed; skip/fail otherwise."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("Node.js and npm are needed for the OpenID provider (oidc-provider)")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    major = int(version.lstrip("v").split(".")[0] or 0) if version else 0
    if major < MIN_NODE_MAJOR:
        _unavailable(f"oidc-provider needs Node.js {MIN_NODE_MAJOR}+, found {version or '?'}")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=PROVIDER_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            _unavailable(f"npm ci failed in {PROVIDER_DIR}: {done.stderr.strip()[-500:]}")
    return node


@dataclass
class RunningProvider:
    """A provider process: its ``issuer`` URL, private ``jwks`` and registered clients."""

    issuer: str
    jwks: dict[str, Any]
    process: subprocess.Popen[str]
    events: queue.Queue[dict[str, Any]]
    stderr: IO[str]
    clients: dict[str, TestClient] = field(default_factory=lambda: dict(CLIENTS))

    def private_key(self, kid: str) -> Key:
        """The provider's private signing key ``kid`` (to sign tokens as the provider)."""
        for data in self.jwks["keys"]:
            if data["kid"] == kid:
                return import_key(data)
        raise KeyError(kid)

    def rotate(self, jwks: dict[str, Any]) -> None:
        """Sign with ``jwks`` from now on (and publish only it); grants and tokens survive."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"command": "rotate", "jwks": jwks}) + "\n")
        self.process.stdin.flush()
        self.wait_for("rotated")
        self.jwks = jwks

    async def arotate(self, jwks: dict[str, Any]) -> None:
        await asyncio.to_thread(self.rotate, jwks)

    def wait_for(self, event: str, deadline: float = 30.0) -> dict[str, Any]:
        limit = time.monotonic() + deadline
        while True:
            remaining = limit - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"oidc-provider did not report {event!r}: {self.log()}")
            try:
                message = self.events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.process.poll() is not None:
                    raise RuntimeError(f"oidc-provider exited: {self.log()}") from None
                continue
            if message.get("event") == event:
                return message

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-4000:]


def _pump(stream: IO[str], events: queue.Queue[dict[str, Any]]) -> None:
    for line in stream:
        with contextlib.suppress(ValueError):
            events.put(json.loads(line))


def _wait_for_discovery(issuer: str, process: subprocess.Popen[str], deadline: float) -> None:
    url = f"{issuer}/.well-known/openid-configuration"
    limit = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if process.poll() is not None or time.monotonic() > limit:
            raise RuntimeError(f"oidc-provider did not serve {url}")
        time.sleep(0.02)


@contextlib.contextmanager
def running_provider(
    *,
    jwks: dict[str, Any] | None = None,
    conform_id_token_claims: bool = False,
    port: int = 0,
    deadline: float = 30.0,
) -> Iterator[RunningProvider]:
    """Run ``provider.mjs`` until the block exits; yields once discovery answers.

    ``conform_id_token_claims=True`` keeps profile claims (``groups``...) out of the ID token
    and in the userinfo answer only, as Authelia does by default.
    """
    node = node_binary()
    jwks = jwks or signing_keys("k1")
    config = {
        "clients": [client.metadata() for client in CLIENTS.values()],
        "jwks": jwks,
        "conformIdTokenClaims": conform_id_token_claims,
    }
    stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(
        [node, str(PROVIDER_DIR / "provider.mjs"), str(port)],
        cwd=PROVIDER_DIR,
        env={**os.environ, "OIDC_PROVIDER_CONFIG": json.dumps(config)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=_pump, args=(process.stdout, events), daemon=True).start()
    provider = RunningProvider("", jwks, process, events, stderr)
    try:
        provider.issuer = provider.wait_for("ready", deadline)["issuer"]
        _wait_for_discovery(provider.issuer, process, deadline)
        yield provider
    finally:
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # the provider exits when its stdin closes
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        stderr.close()
