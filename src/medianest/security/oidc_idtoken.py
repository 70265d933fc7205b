"""ID token validation (OpenID Connect Core §3.1.3.7) and the claims MediaNest reads.

The JOSE work is joserfc's: parsing, signature verification and the registered claims
(``iss``, ``aud``, ``exp``, ``iat``, ``nbf`` with leeway). This module decides what is
allowed around it: the header ``alg`` must be in the allow-list before any key is looked up
(so ``none`` and HS256-with-the-public-key never reach a verifier), the key comes from the
provider's JWKS by ``kid`` and must fit that algorithm, ``azp`` must be our client when
present (and must be present with several audiences), and ``nonce`` must be the one sent.

Every refusal is an :class:`~medianest.errors.AuthenticationError` whose message names what
was wrong but never shows token contents.
"""

from __future__ import annotations

import hmac
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from authlib.oidc.core.util import create_half_hash  # type: ignore[import-untyped]
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingClaimError,
    SecurityWarning,
)
from joserfc.jws import JWSRegistry

from medianest.config.oidc import SUPPORTED_ALGORITHMS, OidcRole, OidcSettings
from medianest.errors import AuthenticationError
from medianest.security.oidc_keys import JwksCache

MAX_TOKEN_CHARS = 16384
_RANK: dict[OidcRole, int] = {"guest": 0, "user": 1, "admin": 2}
PROTOCOL_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "iat", "nbf", "nonce", "azp", "at_hash", "c_hash", "auth_time"}
    | {"sid", "jti", "acr", "amr"}
)


@dataclass(frozen=True, slots=True)
class IdTokenRules:
    """What an ID token must satisfy, besides its nonce."""

    issuer: str
    client_id: str
    algorithms: tuple[str, ...]
    leeway: int


def _refuse(message: str, reason: str) -> AuthenticationError:
    return AuthenticationError(f"sign-in refused: {message}", reason=reason)


async def validate_id_token(
    token: str,
    keys: JwksCache,
    rules: IdTokenRules,
    *,
    nonce: str | None,
    now: Callable[[], int],
    access_token: str | None = None,
) -> dict[str, Any]:
    """The claims of ``token`` once it passed every check; AuthenticationError otherwise.

    ``nonce`` is required to match when given (sign-in) and ignored when ``None`` (refresh,
    where the provider need not repeat it). ``at_hash`` is checked against ``access_token``
    when both are present.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise _refuse("the ID token is missing or too large", "id_token_malformed")
    if token.count(".") == 4:
        raise _refuse("encrypted ID tokens are not supported", "id_token_encrypted")
    try:
        header = jws.extract_compact(token.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError) as exc:
        raise _refuse("the ID token is malformed", "id_token_malformed") from exc
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in rules.algorithms or alg not in SUPPORTED_ALGORITHMS:
        named = f" {alg}" if isinstance(alg, str) and alg in JWSRegistry.algorithms else ""
        raise _refuse(f"the ID token's signature algorithm{named} is not allowed", "bad_alg")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _refuse("the ID token is malformed", "id_token_malformed")
    key = await keys.key_for(kid, alg)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)  # EdDSA is deprecated, still used
            claims = jwt.decode(token, key, algorithms=[alg]).claims
        jwt.JWTClaimsRegistry(
            now=now,
            leeway=rules.leeway,
            iss={"essential": True, "value": rules.issuer},
            sub={"essential": True},
            aud={"essential": True, "value": rules.client_id},
            exp={"essential": True},
            iat={"essential": True},
        ).validate(claims)
    except BadSignatureError as exc:
        raise _refuse("the ID token's signature is not valid", "bad_signature") from exc
    except ExpiredTokenError as exc:
        raise _refuse("the ID token has expired", "expired") from exc
    except MissingClaimError as exc:
        raise _refuse(f"the ID token lacks {exc.claim}", "missing_claim") from exc
    except ClaimError as exc:
        raise _refuse(f"the ID token's {exc.claim} is not valid", f"bad_{exc.claim}") from exc
    except (JoseError, ValueError) as exc:
        raise _refuse("the ID token is malformed", "id_token_malformed") from exc
    _check_azp(claims, rules.client_id)
    if nonce is not None:
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
            raise _refuse("the ID token's nonce does not match this sign-in", "bad_nonce")
    if access_token is not None and "at_hash" in claims:
        _check_at_hash(claims["at_hash"], access_token, alg)
    return claims


def _check_at_hash(value: Any, access_token: str, alg: str) -> None:
    expected = create_half_hash(access_token, alg)
    if expected is None:
        return  # no hash is defined for this algorithm (Ed25519, Ed448): nothing to compare
    if not isinstance(value, str) or not hmac.compare_digest(value.encode(), bytes(expected)):
        raise _refuse("the ID token does not match its access token", "bad_at_hash")


def _check_azp(claims: Mapping[str, Any], client_id: str) -> None:
    aud = claims.get("aud")
    azp = claims.get("azp")
    several = isinstance(aud, list) and len(aud) > 1
    if (several or azp is not None) and azp != client_id:
        raise _refuse("the ID token was issued to another client", "bad_azp")


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim named ``path``: a top-level name as is (names may contain dots, e.g. URLs),
    else a dotted path into nested objects (``realm_access.roles``); ``None`` when absent."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def map_role(settings: OidcSettings, claims: Mapping[str, Any]) -> OidcRole:
    """The MediaNest role for ``claims``: the strongest ``role_map`` match, else the default.

    With no match and no ``default_role`` the sign-in is refused (AuthenticationError).
    """
    value = claim_at(claims, settings.role_claim)
    if isinstance(value, str):
        values = [value]
    elif isinstance(value, list):
        values = [item for item in value if isinstance(item, str)]
    else:
        values = []
    matches = [settings.role_map[item] for item in values if item in settings.role_map]
    if matches:
        return max(matches, key=_RANK.__getitem__)
    if settings.default_role is None:
        raise AuthenticationError(
            "your account is not allowed to use MediaNest; ask its administrator for access",
            reason="no_role",
        )
    return settings.default_role


def text_claim(claims: Mapping[str, Any], *names: str) -> str | None:
    """The first of ``names`` whose claim is a non-empty string."""
    for name in names:
        value = claim_at(claims, name)
        if isinstance(value, str) and value:
            return value
    return None
