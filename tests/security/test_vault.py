"""The vault: AES-256-GCM with a key ring, bound contexts, rotation, configured keys."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr
from pydantic import ValidationError as PydanticValidationError

from medianest.config.identity import IdentitySettings
from medianest.errors import AuthenticationError, ConfigurationError
from medianest.security.vault import Vault, derive_key, key_id

OLD, NEW = secrets.token_bytes(32), secrets.token_bytes(32)
SHAPE = re.compile(r"^v1\.[0-9a-f]{8}\.[A-Za-z0-9_-]+$")


def _body(text: str) -> bytes:
    body = text.split(".", 2)[2]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def _with_body(text: str, data: bytes) -> str:
    version, kid, _ = text.split(".", 2)
    return f"{version}.{kid}.{base64.urlsafe_b64encode(data).rstrip(b'=').decode()}"


def test_round_trip_and_format() -> None:
    vault = Vault([OLD])
    for plaintext in ("plex-token-abc", "", "ünïcødé ✓", "x" * 10_000):
        text = vault.encrypt(plaintext, "plex_token:u1")
        assert SHAPE.match(text)
        assert text.split(".")[1] == key_id(OLD) == hashlib.sha256(OLD).hexdigest()[:8]
        assert vault.decrypt(text, "plex_token:u1") == plaintext
    first, second = vault.encrypt("same", "c"), vault.encrypt("same", "c")
    assert first != second
    assert _body(first)[:12] != _body(second)[:12]


def test_ciphertext_is_standard_aes_gcm_with_the_context_bound() -> None:
    text = Vault([OLD]).encrypt("secret", "plex_token:u1")
    data = _body(text)
    aad = f"medianest vault v1\x00{key_id(OLD)}\x00plex_token:u1".encode()
    assert AESGCM(OLD).decrypt(data[:12], data[12:], aad) == b"secret"
    assert b"secret" not in data


def test_wrong_context_is_refused() -> None:
    vault = Vault([OLD])
    text = vault.encrypt("plex-token", "plex_token:alice")
    for other in ("plex_token:bob", "plex_token:alice ", "", "signing_key:alice"):
        with pytest.raises(AuthenticationError) as caught:
            vault.decrypt(text, other)
        assert "plex-token" not in caught.value.message


def test_every_tampered_byte_is_refused() -> None:
    vault = Vault([OLD])
    text = vault.encrypt("plex-token", "ctx")
    data = _body(text)
    for position in range(len(data)):
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        with pytest.raises(AuthenticationError):
            vault.decrypt(_with_body(text, bytes(flipped)), "ctx")
    for cut in (data[:-1], data[:28], data + b"\x00"):
        with pytest.raises(AuthenticationError):
            vault.decrypt(_with_body(text, cut), "ctx")


def test_malformed_ciphertexts_are_refused_clearly() -> None:
    vault = Vault([OLD])
    good = vault.encrypt("x", "ctx")
    kid = key_id(OLD)
    for bad in ("", "v1", f"v1.{kid}", f"v1.{kid}.", f"v2.{kid}.{good[12:]}", "v1.XYZ.abc"):
        with pytest.raises(AuthenticationError, match="malformed"):
            vault.decrypt(bad, "ctx")
    with pytest.raises(AuthenticationError, match="malformed"):
        vault.needs_reencrypt("nonsense")


def test_a_key_that_is_not_configured_is_a_configuration_error() -> None:
    text = Vault([OLD]).encrypt("x", "ctx")
    with pytest.raises(ConfigurationError) as caught:
        Vault([NEW]).decrypt(text, "ctx")
    assert key_id(OLD) in caught.value.message
    assert "identity.encryption_keys" in caught.value.message


def test_rotation_new_key_first_old_key_still_decrypts() -> None:
    before = Vault([OLD])
    old_text = before.encrypt("plex-token", "ctx")
    during = Vault([NEW, OLD])
    assert during.primary_key_id == key_id(NEW)
    assert during.key_ids == (key_id(NEW), key_id(OLD))
    assert during.decrypt(old_text, "ctx") == "plex-token"
    assert during.needs_reencrypt(old_text)
    new_text = during.reencrypt(old_text, "ctx")
    assert new_text.split(".")[1] == key_id(NEW)
    assert not during.needs_reencrypt(new_text)
    assert during.reencrypt(new_text, "ctx") == new_text
    after = Vault([NEW])
    assert after.decrypt(new_text, "ctx") == "plex-token"
    with pytest.raises(ConfigurationError):
        after.decrypt(old_text, "ctx")


def test_keys_from_configuration_in_every_encoding() -> None:
    raw = secrets.token_bytes(32)
    plain = secrets.token_hex(16)
    encoded = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    for value, key in ((f"hex:{raw.hex()}", raw), (f"base64:{encoded}", raw), (plain, plain)):
        expected = key if isinstance(key, bytes) else key.encode()
        vault = Vault.from_config([SecretStr(value)], b"s" * 32)
        assert vault.primary_key_id == key_id(expected)
    ring = Vault.from_config([SecretStr(f"hex:{NEW.hex()}"), SecretStr(f"hex:{OLD.hex()}")], b"")
    assert ring.key_ids == (key_id(NEW), key_id(OLD))


@pytest.mark.parametrize(
    "value", ["tiny-key", "hex:" + "ab" * 31, "hex:" + "ab" * 33, "hex:zz" * 40, "x" * 40]
)
def test_bad_configured_keys_are_refused_without_echoing_them(value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Vault.from_config([SecretStr(f"hex:{NEW.hex()}"), SecretStr(value)], b"s" * 32)
    assert "identity.encryption_keys[1]" in caught.value.message
    assert value not in caught.value.message
    assert value not in repr(caught.value.problems)


def test_without_configured_keys_one_is_derived_from_the_server_secret() -> None:
    secret = secrets.token_bytes(32)
    derived = derive_key(secret)
    assert len(derived) == 32
    assert derived != secret[:32]
    one, two = Vault.from_config([], secret), Vault.from_config((), secret)
    assert one.primary_key_id == two.primary_key_id == key_id(derived)
    assert two.decrypt(one.encrypt("x", "ctx"), "ctx") == "x"
    assert Vault.from_config([], secrets.token_bytes(32)).primary_key_id != one.primary_key_id


def test_the_vault_never_shows_its_keys() -> None:
    vault = Vault([NEW, OLD])
    shown = repr(vault)
    for key in (NEW, OLD):
        assert key.hex() not in shown
        assert base64.b64encode(key).decode() not in shown
    assert key_id(NEW) in shown


def test_vault_needs_32_byte_keys() -> None:
    with pytest.raises(ConfigurationError):
        Vault([])
    with pytest.raises(ConfigurationError):
        Vault([b"x" * 16])
    assert Vault([OLD, OLD]).key_ids == (key_id(OLD),)


def test_identity_settings_take_keys_from_a_comma_separated_string() -> None:
    settings = IdentitySettings(encryption_keys=f"hex:{NEW.hex()}, hex:{OLD.hex()}")  # type: ignore[arg-type]
    assert [k.get_secret_value() for k in settings.encryption_keys] == [
        f"hex:{NEW.hex()}",
        f"hex:{OLD.hex()}",
    ]
    assert NEW.hex() not in repr(settings)
    assert Vault.from_config(settings.encryption_keys, b"").key_ids == (key_id(NEW), key_id(OLD))
    assert IdentitySettings().encryption_keys == ()
    with pytest.raises(PydanticValidationError):
        IdentitySettings(unknown=1)  # type: ignore[call-arg]
