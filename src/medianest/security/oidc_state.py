"""The sealed login state an OIDC sign-in carries from ``begin`` to the callback.

Between sending the browser to the identity provider and its return, MediaNest must remember
the ``state`` and ``nonce`` it sent, the PKCE ``code_verifier`` and where to go afterwards.
It keeps nothing server-side: :class:`StateSealer` encrypts the values with AES-256-GCM under
a key derived by HKDF-SHA256 from the server secret, and the caller keeps the result in a
short-lived cookie. The cookie can be neither read (the verifier stays secret) nor altered,
is bound to one issuer and client (authenticated data), and expires after ``max_age``.

:func:`safe_return_to` is the open-redirect guard: only a path on our own site is accepted.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from medianest.errors import AuthenticationError, ValidationError

_VERSION = "v1"
_HKDF_INFO = b"medianest/oidc/login-state/v1"
_NONCE_BYTES = 12
_MAX_SEALED_CHARS = 4096
_MAX_RETURN_TO = 2048
_CLOCK_SKEW = 5.0

EXPIRED_MESSAGE = "the sign-in took too long or was started elsewhere; please sign in again"


@dataclass(frozen=True, slots=True)
class LoginState:
    """What ``complete`` needs from ``begin``: every value here is single-use."""

    state: str
    nonce: str
    code_verifier: str
    return_to: str
    created: float


def safe_return_to(value: str) -> str:
    """``value`` when it is a path on this site (``/catalog?x=1``), else ValidationError.

    Refused: absolute URLs, scheme-relative ``//host``, backslashes (browsers read ``/\\host``
    as ``//host``), control characters and anything not starting with ``/``.
    """
    problem = ""
    if not value.startswith("/"):
        problem = "must be a path starting with /"
    elif value.startswith("//") or "\\" in value:
        problem = "must not name another host"
    elif len(value) > _MAX_RETURN_TO:
        problem = f"must be at most {_MAX_RETURN_TO} characters"
    elif any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        problem = "must not contain control characters"
    else:
        parts = urlsplit(value)
        if parts.scheme or parts.netloc:
            problem = "must not name another host"
    if problem:
        raise ValidationError(
            f"return_to {problem}", errors={"return_to": f"a local path: {problem}"}
        )
    return value


class StateSealer:
    """Seals and opens :class:`LoginState` values for one issuer and client.

    ``secret`` is the server secret (at least 32 bytes); ``context`` names what the state is
    for (issuer and client id), so a state sealed for one provider is refused by another.
    """

    def __init__(
        self,
        secret: bytes,
        *,
        context: str,
        max_age: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the sealing secret must be at least 16 bytes")
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"medianest-oidc", info=_HKDF_INFO
        ).derive(secret)
        self._aead = AESGCM(key)
        self._aad = f"{_VERSION}|{context}".encode()
        self.max_age = max_age
        self._clock = clock

    def seal(self, login: LoginState) -> str:
        """The encrypted, authenticated form of ``login``: URL- and cookie-safe text."""
        nonce = os.urandom(_NONCE_BYTES)
        plaintext = json.dumps(asdict(login), separators=(",", ":")).encode()
        sealed = nonce + self._aead.encrypt(nonce, plaintext, self._aad)
        return f"{_VERSION}.{base64.urlsafe_b64encode(sealed).rstrip(b'=').decode()}"

    def unseal(self, sealed: str) -> LoginState:
        """The login state in ``sealed``; AuthenticationError if altered, foreign or too old."""
        version, _, body = sealed.partition(".")
        if version != _VERSION or not body or len(sealed) > _MAX_SEALED_CHARS:
            raise AuthenticationError(EXPIRED_MESSAGE, reason="state_malformed")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plaintext = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], self._aad)
            login = LoginState(**json.loads(plaintext))
        except (binascii.Error, InvalidTag, ValueError, TypeError) as exc:
            raise AuthenticationError(EXPIRED_MESSAGE, reason="state_invalid") from exc
        age = self._clock() - login.created
        if age > self.max_age or age < -_CLOCK_SKEW:
            raise AuthenticationError(EXPIRED_MESSAGE, reason="state_expired")
        return login
