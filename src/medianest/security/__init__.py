"""Security: API keys (issue, verify, rotate, revoke), scopes, and the server secret.

The HTTP side (which header carries a key, the ``WWW-Authenticate`` challenge) is described
here as plain functions so the API and the gateway answer 401 and 403 the same way.
"""

from medianest.security.apikeys import (
    ADMIN_SCOPE,
    ApiKeyService,
    extract_api_key,
    find_api_keys,
    generate_api_key,
    looks_like_api_key,
    normalize_key_id,
    parse_key_id,
    require_scopes,
    www_authenticate,
)
from medianest.security.apikeys_store import ApiKeyInfo, validate_scopes
from medianest.security.secret import load_or_create_secret, server_secret

__all__ = [
    "ADMIN_SCOPE",
    "ApiKeyInfo",
    "ApiKeyService",
    "extract_api_key",
    "find_api_keys",
    "generate_api_key",
    "load_or_create_secret",
    "looks_like_api_key",
    "normalize_key_id",
    "parse_key_id",
    "require_scopes",
    "server_secret",
    "validate_scopes",
    "www_authenticate",
]
