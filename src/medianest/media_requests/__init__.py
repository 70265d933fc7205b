"""Media requests: a person asks for a movie or a show, the hub makes it happen in Overseerr.

* :mod:`.saga` -- the ``request-media`` saga (quota, Overseerr, the ``MediaRequest``
  aggregate, ``request.created``) and why each step is idempotent;
* :mod:`.quota` -- per-person quotas as events; :mod:`.upstream` -- creating the Overseerr
  request at most once; :mod:`.hooks` -- test-only pause / fail points;
* :mod:`.projection` -- the ``media_requests`` read model; :mod:`.queries` -- reading it;
* :mod:`.wiring` -- what the hub calls.

The API is :mod:`medianest.api.v1.requests`.
"""

from medianest.media_requests.projection import RequestProjection
from medianest.media_requests.queries import RequestRow, find_request, list_requests
from medianest.media_requests.saga import REQUEST_MEDIA, RequestInput, saga_id_for

__all__ = [
    "REQUEST_MEDIA",
    "RequestInput",
    "RequestProjection",
    "RequestRow",
    "find_request",
    "list_requests",
    "saga_id_for",
]
