"""Check HTTP traffic against the OpenAPI specs in ``shared/contracts``.

:class:`Contract` validates a *response* (what a simulator answered) or a *request* (what a
client sent, e.g. an adapter under test, read from a simulator's request log) against one
service's spec(s), using openapi-core. Plex is described by two specs: the 2026 one first,
then the legacy one for the paths it lacks (``/library/sections``, ``/library/recentlyAdded``,
``/library/metadata/{id}/children``) and for plex.tv, whose paths live under the legacy
spec's ``https://plex.tv/api/v2`` server (the request URL is re-based there).

Where a spec is wrong about the real service, NOTES.md wins. Those places are listed once,
in :data:`DEVIATIONS`, each with its reason; a schema error matching a deviation is ignored,
anything else fails the test. Keep the list short and specific.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.templating.paths.finders import APICallPathFinder
from openapi_core.templating.responses.exceptions import ResponseNotFound
from werkzeug.datastructures import Headers, ImmutableMultiDict

from medianest.simulators.server import RecordedRequest
from tests.support.services import services_required

CONTRACTS = Path(
    os.environ.get(
        "MEDIANEST_CONTRACTS_DIR", Path(__file__).resolve().parents[3] / "shared" / "contracts"
    )
)
PLEX_SPEC = "plex-api-spec.yaml"
PLEX_LEGACY_SPEC = "plex-api-spec-legacy-dereferenced.yaml"
OVERSEERR_SPEC = "overseerr-api.yml"
JELLYSEERR_SPEC = "jellyseerr-api.yml"


@dataclass(frozen=True)
class Deviation:
    """A documented disagreement between a spec and the real service (NOTES.md wins).

    ``path`` is a glob on the request path, ``instance`` a glob on the ``/``-joined location
    of the offending value in the body, ``keyword`` the JSON-schema keyword that failed.
    """

    spec: str
    path: str
    instance: str
    keyword: str
    reason: str

    def covers(self, spec: str, path: str, instance: str, keyword: str) -> bool:
        return (
            self.spec == spec
            and fnmatch.fnmatchcase(path, self.path)
            and fnmatch.fnmatchcase(instance, self.instance)
            and self.keyword == keyword
        )


DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        PLEX_SPEC,
        "/library/sections/all",
        "MediaContainer/Directory/*/hidden",
        "type",
        "PMS sends section `hidden` as an int 0/1/2 (legacy spec and real responses); the 2026 "
        "spec says boolean",
    ),
    Deviation(
        PLEX_LEGACY_SPEC,
        "/library/recentlyAdded",
        "MediaContainer/Metadata/*/ratingKey",
        "type",
        "ratingKey is a string everywhere in PMS (NOTES 1.6); the legacy spec's recentlyAdded "
        "schema, inferred from one example, says number",
    ),
    Deviation(
        PLEX_LEGACY_SPEC,
        "/library/recentlyAdded",
        "MediaContainer/Metadata/*/Media/*/videoResolution",
        "type",
        "videoResolution is a string ('1080', '4k', 'sd'); the legacy recentlyAdded schema says "
        "number (the 2026 spec says string)",
    ),
    Deviation(
        PLEX_LEGACY_SPEC,
        "/library/recentlyAdded",
        "MediaContainer/Metadata/*/originallyAvailableAt",
        "format",
        "originallyAvailableAt is a date 'YYYY-MM-DD' (NOTES 1.6; the 2026 spec says format "
        "date); the legacy recentlyAdded schema says date-time",
    ),
)


class SpecViolation(AssertionError):
    """The traffic does not match the contract (and no deviation covers it)."""


@dataclass
class _Request:
    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters = field(default_factory=RequestParameters)


@dataclass
class _Response:
    status_code: int
    headers: Headers
    content_type: str
    data: bytes | None


def _schema_errors(error: BaseException) -> list[Any] | None:
    cause = error.__cause__
    while cause is not None:
        found = getattr(cause, "schema_errors", None)
        if found is not None:
            return list(found)
        cause = cause.__cause__
    return None


def require_contracts() -> Path:
    """The contracts folder; skip without it, or fail when CI requires every resource."""
    if not CONTRACTS.is_dir():
        reason = f"the API contracts are not at {CONTRACTS} (set MEDIANEST_CONTRACTS_DIR)"
        if services_required():
            pytest.fail(f"{reason} and MEDIANEST_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(reason)
    return CONTRACTS


class Contract:
    """The spec(s) of one service; see the module docstring."""

    def __init__(
        self, files: Iterable[str], *, rebase: str | None = None, strict_query: bool = False
    ) -> None:
        self.names = list(files)
        self.rebase = rebase
        self.strict_query = strict_query
        self.apis: list[tuple[str, OpenAPI]] = []
        require_contracts()
        for name in self.names:
            data = yaml.load((CONTRACTS / name).read_text(), Loader=yaml.CSafeLoader)
            self.apis.append(
                (name, OpenAPI.from_dict(data, config=Config(spec_validator_cls=None)))
            )

    def _request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str = "",
    ) -> _Request:
        parts = urlsplit(url)
        host = self.rebase or f"{parts.scheme}://{parts.netloc}"
        query = ImmutableMultiDict(parse_qsl(parts.query, keep_blank_values=True))
        params = RequestParameters(query=query, header=Headers(headers))
        return _Request(host, parts.path, method.lower(), body or None, content_type, params)

    def _run(self, kind: str, request: _Request, response: _Response | None) -> None:
        problems: list[str] = []
        for name, api in self.apis:
            if response is None:
                errors = list(api.iter_request_errors(request))
            else:
                errors = list(api.iter_response_errors(request, response))
            if any(isinstance(e, PathNotFound | OperationNotFound) for e in errors):
                problems.append(f"{name}: {errors[0]}")
                continue
            remaining = [self._describe(name, request.path, e) for e in errors]
            left = [line for group in remaining for line in group]
            if response is None and self.strict_query:
                left += self._unknown_query(api, request)
            if left:
                raise SpecViolation(
                    f"{kind} {request.method.upper()} {request.path} vs {name}:\n" + "\n".join(left)
                )
            return
        raise SpecViolation(f"{request.method.upper()} {request.path} is in no spec: {problems}")

    @staticmethod
    def _unknown_query(api: OpenAPI, request: _Request) -> list[str]:
        """Query parameters the operation does not declare (Overseerr rejects them)."""
        found = APICallPathFinder(api.spec).find(request.method, request.host_url + request.path)
        declared: set[str] = set()
        for owner in (found.path, found.operation):
            if "parameters" in owner:
                for param in owner / "parameters":
                    with param.open() as data:
                        if data.get("in") == "query":
                            declared.add(str(data.get("name")))
        sent = set(request.parameters.query.keys())
        return [f"  unknown query parameter {name!r}" for name in sorted(sent - declared)]

    def _describe(self, spec: str, path: str, error: BaseException) -> list[str]:
        if isinstance(error, ResponseNotFound):
            return [f"status not documented: {error}"]
        schema_errors = _schema_errors(error)
        if schema_errors is None:
            return [f"{type(error).__name__}: {error}"]
        out = []
        for item in schema_errors:
            instance = "/".join(str(p) for p in item.absolute_path)
            if any(d.covers(spec, path, instance, item.validator) for d in DEVIATIONS):
                continue
            out.append(f"  at {instance or '<root>'}: {item.message} ({item.validator})")
        return out

    # -- public API -------------------------------------------------------------------------
    def validate_response(
        self,
        method: str,
        url: str,
        status: int,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        request_headers: Mapping[str, str] | None = None,
    ) -> None:
        """Raise :class:`SpecViolation` if this response breaks the contract."""
        request = self._request(method, url, request_headers or {})
        response = _Response(status, Headers(dict(headers or {})), content_type, body)
        self._run("response", request, response)

    def validate_request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str = "",
    ) -> None:
        """Raise :class:`SpecViolation` if a client's request breaks the contract."""
        self._run("request", self._request(method, url, headers, body, content_type), None)

    def validate_recorded(
        self, recorded: RecordedRequest, base_url: str = "http://127.0.0.1"
    ) -> None:
        """Validate a request a simulator recorded (``app.requests``) as a client request."""
        url = f"{base_url}{recorded.target}"
        content_type = recorded.header("content-type") or ""
        self.validate_request(
            recorded.method,
            url,
            headers=recorded.headers,
            body=recorded.body,
            content_type=content_type,
        )

    async def check(self, response: aiohttp.ClientResponse) -> Any:
        """Validate an aiohttp response (request and response) and return its JSON body."""
        body = await response.read()
        info = response.request_info
        headers = dict(response.headers.items())
        self.validate_response(
            info.method,
            str(info.url),
            response.status,
            body,
            headers=headers,
            content_type=response.content_type,
            request_headers=dict(info.headers),
        )
        return json.loads(body) if body else None
