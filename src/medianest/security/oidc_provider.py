"""Talking to the identity provider: its discovery document and plain HTTP exchanges.

Errors: when the provider cannot be reached, times out, answers 5xx or answers something
that is not the JSON it must send, the call raises an :class:`~medianest.errors.UpstreamError`
with ``service="oidc"`` (:class:`UpstreamUnavailable`, :class:`UpstreamTimeout`,
:class:`UpstreamContractError`): the user did nothing wrong and may retry later. A discovery
document whose ``issuer`` is not the configured one, or whose endpoints are not https, is a
:class:`ConfigurationError`: retrying will not help. Refusals that concern the sign-in itself
(4xx from the token endpoint...) are turned into ``AuthenticationError`` by the caller.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from medianest.config.oidc import OidcSettings
from medianest.errors import (
    ConfigurationError,
    UpstreamContractError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

SERVICE = "oidc"
MAX_BODY_BYTES = 1 << 20
DISCOVERY_PATH = "/.well-known/openid-configuration"


def discovery_url(issuer: str) -> str:
    """Where the discovery document of ``issuer`` lives (OpenID Connect Discovery 1.0 §4)."""
    return issuer.rstrip("/") + DISCOVERY_PATH


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A provider's answer: status, content type and the decoded JSON body (or ``None``)."""

    status: int
    content_type: str
    body: Any


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The parts of the discovery document MediaNest uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    token_endpoint_auth_methods: tuple[str, ...]
    iss_parameter_supported: bool
    document: Mapping[str, Any]

    @classmethod
    def parse(cls, document: Any, settings: OidcSettings) -> ProviderMetadata:
        """Check a discovery document against ``settings`` and keep what is needed."""
        if not isinstance(document, dict):
            raise _contract("the discovery document is not a JSON object", "discovery")
        if document.get("issuer") != settings.issuer:
            raise ConfigurationError(
                f"the identity provider calls itself {document.get('issuer')!r}, but "
                f"oidc.issuer is {settings.issuer!r}; they must be identical",
                problems=[("oidc.issuer", settings.issuer, "the issuer of the discovery document")],
            )
        endpoints: dict[str, str | None] = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint"):
            value = document.get(name)
            if value is None and name == "userinfo_endpoint":
                endpoints[name] = None
                continue
            if not isinstance(value, str) or not value:
                raise _contract(f"the discovery document has no {name}", "discovery")
            if not settings.allows_url(value):
                raise ConfigurationError(
                    f"the identity provider's {name} is not https; MediaNest refuses to send "
                    "tokens in clear (allow_insecure_http is for testing only)",
                    problems=[("oidc.issuer", settings.issuer, f"an https {name}")],
                )
            endpoints[name] = value
        methods = document.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise ConfigurationError(
                "the identity provider does not support PKCE with S256, which MediaNest requires"
            )
        auth_methods = document.get("token_endpoint_auth_methods_supported")
        return cls(
            issuer=settings.issuer,
            authorization_endpoint=str(endpoints["authorization_endpoint"]),
            token_endpoint=str(endpoints["token_endpoint"]),
            jwks_uri=str(endpoints["jwks_uri"]),
            userinfo_endpoint=endpoints["userinfo_endpoint"],
            token_endpoint_auth_methods=(
                tuple(str(m) for m in auth_methods)
                if isinstance(auth_methods, list)
                else ("client_secret_basic",)
            ),
            iss_parameter_supported=document.get("authorization_response_iss_parameter_supported")
            is True,
            document=document,
        )


class ProviderHttp:
    """HTTP exchanges with the provider through one ``aiohttp.ClientSession``.

    Transport failures and 5xx answers become upstream errors here; other statuses are
    returned for the caller to judge. Bodies are capped at 1 MiB and redirects not followed.
    """

    def __init__(self, session: aiohttp.ClientSession, timeout: float) -> None:
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def get(
        self, url: str, *, endpoint: str, headers: Mapping[str, str] | None = None
    ) -> HttpAnswer:
        """GET ``url`` (``endpoint`` names it in errors: ``discovery``, ``jwks``...)."""
        return await self._request("GET", url, endpoint, headers, None)

    async def post_form(
        self,
        url: str,
        form: Mapping[str, str],
        *,
        endpoint: str,
        headers: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        """POST ``form`` as ``application/x-www-form-urlencoded``."""
        return await self._request("POST", url, endpoint, headers, dict(form))

    async def get_json_object(self, url: str, *, endpoint: str) -> dict[str, Any]:
        """GET a JSON object that must be there (discovery, JWKS): anything else is an error."""
        answer = await self.get(url, endpoint=endpoint)
        if answer.status != 200 or not isinstance(answer.body, dict):
            raise _contract(
                f"the identity provider answered its {endpoint} URL with status {answer.status} "
                "and no JSON object",
                endpoint,
                status=answer.status,
            )
        return answer.body

    async def _request(
        self,
        method: str,
        url: str,
        endpoint: str,
        headers: Mapping[str, str] | None,
        form: dict[str, str] | None,
    ) -> HttpAnswer:
        sent = {"Accept": "application/json", **(headers or {})}
        try:
            async with self.session.request(
                method,
                url,
                headers=sent,
                data=form,
                allow_redirects=False,
                timeout=self.timeout,
            ) as response:
                raw = await _read_capped(response, endpoint)
                status = response.status
                content_type = response.content_type
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"the identity provider did not answer its {endpoint} request in time",
                service=SERVICE,
                endpoint=endpoint,
                method=method,
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(
                f"the identity provider cannot be reached ({type(exc).__name__})",
                service=SERVICE,
                endpoint=endpoint,
                method=method,
            ) from exc
        if status >= 500:
            raise UpstreamUnavailable(
                f"the identity provider failed its {endpoint} request (status {status})",
                service=SERVICE,
                endpoint=endpoint,
                method=method,
                status=status,
            )
        body: Any = None
        if raw and content_type.endswith("json"):
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        return HttpAnswer(status, content_type, body)


async def _read_capped(response: aiohttp.ClientResponse, endpoint: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _contract(f"the identity provider's {endpoint} answer is too large", endpoint)
        chunks.append(chunk)
    return b"".join(chunks)


def _contract(message: str, endpoint: str, *, status: int | None = None) -> UpstreamContractError:
    return UpstreamContractError(message, service=SERVICE, endpoint=endpoint, status=status)
