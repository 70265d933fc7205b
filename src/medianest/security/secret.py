"""The server secret: the key of the HMACs that stand in for API keys in the database.

It comes from the setting ``security.secret_key`` (``MEDIANEST_SECURITY__SECRET_KEY``) when
set: at least 32 bytes, given as plain text, as ``base64:<data>`` or as ``hex:<data>``
(``python -c "import secrets; print(secrets.token_urlsafe(32))"`` makes a good one).
Otherwise a random 32-byte secret is created once in ``<data_dir>/secret.key`` (mode 0600)
and reused; processes that start together agree on it, because the file appears whole or
not at all (written to a private temporary file, then hard-linked into place).

**Several instances on different machines must all be configured with the same secret**:
with a file secret each machine would have its own, and keys issued on one would be
rejected by the others. Changing the secret invalidates every existing key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from medianest.config import Settings
from medianest.errors import ConfigurationError
from medianest.observability import get_logger

_log = get_logger("medianest.security.secret")

KEY_FILE_NAME = "secret.key"
MIN_SECRET_BYTES = 32


def decode_secret(value: str) -> bytes:
    """The bytes of a configured secret (``base64:``/``hex:`` prefixes, else UTF-8 text)."""
    kind, sep, data = value.partition(":")
    try:
        if sep and kind == "base64":
            raw = base64.b64decode(data + "=" * (-len(data) % 4), altchars=b"-_", validate=False)
        elif sep and kind == "hex":
            raw = bytes.fromhex(data)
        else:
            raw = value.encode("utf-8")
    except (ValueError, binascii.Error) as exc:
        raise ConfigurationError(
            f"security.secret_key is not valid {kind}",
            problems=[("security.secret_key", "***", f"valid {kind} data")],
        ) from exc
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"security.secret_key is too short: {len(raw)} bytes, at least "
            f"{MIN_SECRET_BYTES} are needed",
            problems=[("security.secret_key", "***", f">= {MIN_SECRET_BYTES} bytes")],
        )
    return raw


def load_or_create_secret(configured: SecretStr | None, data_dir: Path) -> bytes:
    """The configured secret, else the one in ``<data_dir>/secret.key`` (created if absent).

    Blocking file I/O: call it while the hub starts (or through :func:`asyncio.to_thread`).
    """
    if configured is not None:
        return decode_secret(configured.get_secret_value())
    path = data_dir / KEY_FILE_NAME
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    temporary = data_dir / f".{KEY_FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_bytes(MIN_SECRET_BYTES).hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
            _log.info("server secret created", path=str(path))
    finally:
        temporary.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> bytes:
    text = path.read_text(encoding="ascii").strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"{path} does not hold a valid secret (64+ hex digits); delete it to make a new "
            "one (every existing API key stops working) or set security.secret_key"
        )
    if path.stat().st_mode & 0o077:
        _log.warning("server secret file is readable by others; chmod 600 it", path=str(path))
    return raw


def server_secret(settings: Settings) -> bytes:
    """The server secret for ``settings``: ``security.secret_key``, else the data-dir file."""
    security = getattr(settings, "security", None)
    configured: SecretStr | None = getattr(security, "secret_key", None)
    return load_or_create_secret(configured, settings.data_dir)
