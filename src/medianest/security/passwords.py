"""Passwords of local accounts: a policy, argon2id hashes, verification off the event loop.

Hashes are argon2id in the PHC string format (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``)
with argon2-cffi's defaults (RFC 9106's second recommended profile: 64 MiB, 3 passes,
4 lanes). Hashing takes tens of milliseconds of CPU and blocks, so :meth:`Passwords.hash` and
:meth:`Passwords.verify` run in a worker thread; the default executor's size bounds how many
run at once (and so the memory they take). When the parameters are raised later,
:meth:`Passwords.needs_rehash` says which stored hashes to replace at the next sign-in.

The policy follows NIST SP 800-63B: length matters, composition rules do not. A password has
at least ``min_length`` (12) and at most 1024 characters, is not the username, and is not
one character repeated. Passwords and hashes are never logged.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from medianest.errors import ValidationError
from medianest.observability import get_logger

_log = get_logger("medianest.security.passwords")

MIN_LENGTH = 12
MAX_LENGTH = 1024


class Passwords:
    """The password policy and hashing of one deployment (``hasher`` tunes argon2)."""

    def __init__(self, hasher: PasswordHasher | None = None, *, min_length: int = MIN_LENGTH):
        if not 1 <= min_length <= MAX_LENGTH:
            raise ValueError(f"min_length must be between 1 and {MAX_LENGTH}")
        self.hasher = hasher or PasswordHasher()
        self.min_length = min_length
        self._dummy: str | None = None

    def __repr__(self) -> str:
        h = self.hasher
        return (
            f"Passwords(min_length={self.min_length}, argon2id m={h.memory_cost} "
            f"t={h.time_cost} p={h.parallelism})"
        )

    def check_policy(self, password: str, username: str | None = None) -> None:
        """Raise :class:`ValidationError` (``errors={"password": ...}``) unless acceptable."""
        reason = None
        if len(password) < self.min_length:
            reason = f"must be at least {self.min_length} characters"
        elif len(password) > MAX_LENGTH:
            reason = f"must be at most {MAX_LENGTH} characters"
        elif len(set(password)) == 1:
            reason = "must not be one character repeated"
        elif username and password.casefold() == username.strip().casefold():
            reason = "must not be the username"
        if reason is not None:
            raise ValidationError(f"the password {reason}", errors={"password": reason})

    async def hash(self, password: str) -> str:
        """The argon2id hash of ``password`` (computed in a worker thread)."""
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, hashed: str, password: str) -> bool:
        """Whether ``password`` matches ``hashed`` (a broken hash simply does not match)."""
        if len(password) > MAX_LENGTH:
            return False
        return await asyncio.to_thread(self._verify, hashed, password)

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return self.hasher.verify(hashed, password)
        except InvalidHashError:
            _log.warning("stored password hash is not a valid argon2 hash")
            return False
        except VerificationError:
            return False

    async def verify_nothing(self, password: str) -> None:
        """Spend the time of one verification without a hash to check (unknown usernames),
        so response times do not tell which usernames exist."""
        if self._dummy is None:
            self._dummy = await self.hash("not a password: timing equaliser")
        await self.verify(self._dummy, password[:MAX_LENGTH])

    def needs_rehash(self, hashed: str) -> bool:
        """Whether ``hashed`` was made with other parameters than the current ones."""
        try:
            return self.hasher.check_needs_rehash(hashed)
        except (InvalidHashError, ValueError):
            return True


_default = Passwords()


def check_password_policy(password: str, username: str | None = None) -> None:
    """The default policy (see :meth:`Passwords.check_policy`)."""
    _default.check_policy(password, username)


async def hash_password(password: str) -> str:
    """An argon2id hash with the default parameters, computed in a worker thread."""
    return await _default.hash(password)


async def verify_password(hashed: str, password: str) -> bool:
    """Whether ``password`` matches ``hashed``, checked in a worker thread."""
    return await _default.verify(hashed, password)


def needs_rehash(hashed: str) -> bool:
    """Whether ``hashed`` should be replaced by a hash with the default parameters."""
    return _default.needs_rehash(hashed)
