"""Secrets at rest (people's Plex tokens, token signing keys) under AES-256-GCM.

A :class:`Vault` holds a key ring: the **first** key encrypts, **every** key decrypts. To
rotate, configure a new key first and keep the old ones; run the re-encryption
(:meth:`medianest.security.users.UserService.reencrypt_tokens`); then drop the old keys.
The keys come from ``identity.encryption_keys``; without any, one key is derived from the
server secret with HKDF-SHA-256, so a default installation still encrypts.

A ciphertext is text::

    v1.<key id>.<base64url(nonce || ciphertext || tag)>

The key id is the first 8 hex digits of the SHA-256 of the key: it says which key to use
without revealing anything useful about it. The nonce is 12 random bytes. The associated
data binds the format version, the key id and a **context** string chosen by the caller,
e.g. ``plex_token:<user id>``: a ciphertext copied to another user's row (or used for
another purpose) fails to decrypt.

Errors: a ciphertext made with a key that is not configured any more raises
:class:`~medianest.errors.ConfigurationError` (the operator must put the key back); a
malformed or tampered ciphertext, or one presented with the wrong context, raises
:class:`~medianest.errors.AuthenticationError` (the data failed authentication: whoever
relies on it must get a fresh secret, e.g. sign in with Plex again). Messages never contain
plaintext, keys or ciphertext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

from medianest.errors import AuthenticationError, ConfigurationError
from medianest.security.secret import decode_secret

VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
HKDF_INFO = b"medianest vault v1"
_SETTING = "identity.encryption_keys"
_KEY_ID = re.compile(r"[0-9a-f]{8}")


def key_id(key: bytes) -> str:
    """The public name of ``key``: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:8]


def derive_key(server_secret: bytes) -> bytes:
    """The vault key used when none is configured: HKDF-SHA-256 of the server secret."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=HKDF_INFO).derive(
        server_secret
    )


def decode_key(value: str, index: int = 0) -> bytes:
    """A configured key (plain, ``base64:`` or ``hex:``) as exactly 32 bytes."""
    where = f"{_SETTING}[{index}]"
    try:
        raw = decode_secret(value)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{where} is not a valid key: {exc.message.replace('security.secret_key', 'it')}",
            problems=[(where, "***", "32 bytes, plain or base64:/hex: encoded")],
        ) from None
    if len(raw) != KEY_BYTES:
        raise ConfigurationError(
            f"{where} is {len(raw)} bytes, an AES-256 key is exactly {KEY_BYTES}; make one "
            "with: python -c \"import secrets; print('hex:' + secrets.token_hex(32))\"",
            problems=[(where, "***", "exactly 32 bytes")],
        )
    return raw


class Vault:
    """AES-256-GCM with a key ring; see the module docstring for the format and errors."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        ring: dict[str, AESGCM] = {}
        for index, key in enumerate(keys):
            if len(key) != KEY_BYTES:
                raise ConfigurationError(
                    f"vault key {index} is {len(key)} bytes, it must be {KEY_BYTES}"
                )
            kid = key_id(key)
            ring.setdefault(kid, AESGCM(key))
        if not ring:
            raise ConfigurationError("the vault needs at least one key")
        self._ring = ring
        self._primary = next(iter(ring))

    @classmethod
    def from_config(cls, configured: Iterable[SecretStr], server_secret: bytes) -> Vault:
        """The vault for ``identity.encryption_keys``, else one key derived from the secret."""
        keys = [decode_key(item.get_secret_value(), i) for i, item in enumerate(configured)]
        return cls(keys or [derive_key(server_secret)])

    def __repr__(self) -> str:
        return f"Vault(primary={self._primary!r}, keys={list(self._ring)!r})"

    @property
    def primary_key_id(self) -> str:
        """The id of the key that encrypts."""
        return self._primary

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of every key that decrypts, the encrypting one first."""
        return tuple(self._ring)

    @staticmethod
    def _aad(kid: str, context: str) -> bytes:
        return f"medianest vault {VERSION}\x00{kid}\x00{context}".encode()

    def encrypt(self, plaintext: str, context: str) -> str:
        """``plaintext`` encrypted under the first key, bound to ``context``."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ring[self._primary].encrypt(
            nonce, plaintext.encode("utf-8"), self._aad(self._primary, context)
        )
        body = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return f"{VERSION}.{self._primary}.{body}"

    def decrypt(self, text: str, context: str) -> str:
        """The plaintext of ``text``, which must have been encrypted for ``context``."""
        kid, data = _split(text)
        cipher = self._ring.get(kid)
        if cipher is None:
            raise ConfigurationError(
                f"a secret was encrypted with vault key {kid}, which is not configured: add "
                f"it back to {_SETTING} (after the current key) and re-encrypt",
                key_id=kid,
            )
        try:
            plaintext = cipher.decrypt(
                data[:NONCE_BYTES], data[NONCE_BYTES:], self._aad(kid, context)
            )
            return plaintext.decode("utf-8")
        except (InvalidTag, UnicodeDecodeError):
            raise AuthenticationError(
                "an encrypted secret failed authentication (tampered, or not for this use)"
            ) from None

    def needs_reencrypt(self, text: str) -> bool:
        """Whether ``text`` was made with a key other than the encrypting one."""
        kid, _ = _split(text)
        return kid != self._primary

    def reencrypt(self, text: str, context: str) -> str:
        """``text`` under the encrypting key (unchanged if it already is)."""
        if not self.needs_reencrypt(text):
            return text
        return self.encrypt(self.decrypt(text, context), context)


def _split(text: str) -> tuple[str, bytes]:
    version, _, rest = text.partition(".")
    kid, _, body = rest.partition(".")
    malformed = AuthenticationError("an encrypted secret is malformed")
    if version != VERSION or not _KEY_ID.fullmatch(kid) or not body:
        raise malformed
    try:
        data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise malformed from None
    if len(data) < NONCE_BYTES + 16:
        raise malformed
    return kid, data
