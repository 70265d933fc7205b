"""The etcd registry's watch: a resumable ``/v3/watch`` stream and its events as changes.

:func:`watch_events` keeps one watch on a key prefix open and yields the events of every
answer, one batch per answer. When the stream drops (etcd restarted, a network failure) it
reopens the watch from the revision after the last one it yielded, so nothing is lost and
nothing is repeated; it gives up with the last error after ``reconnect`` seconds without a
connection. A watch etcd cancels (its history was compacted past the resume point) raises
:class:`~medianest.errors.BackendError`.

:func:`changes_of` turns one batch into :class:`~medianest.discovery.base.Change` values;
the rules are in :mod:`.etcd`'s docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Callable

from medianest.discovery.backends.etcd_gateway import JSON, EtcdGateway, b64, prefix_end, unb64
from medianest.discovery.base import Change, ChangeKind, Registration
from medianest.errors import BackendError, BackendUnavailable
from medianest.observability import get_logger

_log = get_logger("medianest.discovery")
_UNAUTHENTICATED = 16  # the token expired: the next attempt authenticates again


async def watch_events(
    gateway: EtcdGateway,
    prefix: str,
    start_revision: int,
    *,
    reconnect: float,
    closed: Callable[[], bool],
) -> AsyncGenerator[list[JSON], None]:
    """Event batches of every key under ``prefix`` from ``start_revision`` on, with ``prev_kv``.

    Ends quietly when ``closed()`` turns true (the registry was closed under the watch).
    """
    request = {"key": b64(prefix), "range_end": b64(prefix_end(prefix)), "prev_kv": True}
    next_revision, delay, deadline = start_revision, 0.05, 0.0
    while True:
        body = {"create_request": {**request, "start_revision": str(next_revision)}}
        try:
            async with contextlib.aclosing(gateway.stream("/v3/watch", body)) as stream:
                async for result in stream:
                    if result.get("canceled") or int(result.get("compact_revision", 0)):
                        reason = str(result.get("cancel_reason") or "its history was compacted")
                        raise BackendError(
                            f"etcd cancelled the watch from revision {next_revision}: {reason}",
                            backend=gateway.name,
                            grpc_code=_UNAUTHENTICATED if "Unauthenticated" in reason else None,
                        )
                    delay, deadline = 0.05, 0.0  # connected
                    events = result.get("events") or []
                    if events:
                        yield events
                    for event in events:
                        next_revision = max(next_revision, int(event["kv"]["mod_revision"]) + 1)
        except BackendError as exc:
            if closed():
                return
            if exc.extra.get("grpc_code") == _UNAUTHENTICATED and gateway.username is not None:
                gateway.forget_token()
            elif not isinstance(exc, BackendUnavailable):
                raise
            deadline = deadline or time.monotonic() + reconnect
            if time.monotonic() >= deadline:
                raise
            _log.info("registry_watch_reconnect", backend=gateway.name, error=str(exc))
            await asyncio.sleep(delay)  # back off before the next attempt
            delay = min(delay * 2, 1.0)


def changes_of(
    events: list[JSON],
    prefix: str,
    name: str | None,
    parse: Callable[[JSON | None], Registration | None],
) -> list[Change]:
    """The changes of service ``name`` (all when None) in one batch of watch events."""
    instances, removed = f"{prefix}/instances/", f"{prefix}/removed/"
    on_purpose: set[tuple[str, str]] = set()  # (revision, id) deleted on purpose
    for event in events:
        kv, key = event["kv"], unb64(event["kv"]["key"])
        if event.get("type") == "DELETE":
            continue
        if key.startswith(removed):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                on_purpose.add((kv["mod_revision"], json.loads(unb64(kv["value"]))["id"]))
        elif key.startswith(instances):
            on_purpose.add((kv["mod_revision"], key.rpartition("/")[2]))
    changes = []
    for event in events:
        key = unb64(event["kv"]["key"])
        service, _, instance_id = key.removeprefix(instances).partition("/")
        if not key.startswith(instances) or name not in (None, service):
            continue
        previous = parse(event.get("prev_kv"))
        if event.get("type") == "DELETE":
            purposeful = (event["kv"]["mod_revision"], instance_id) in on_purpose
            kind: ChangeKind = "deregistered" if purposeful else "expired"
            changes.append(Change(kind, instance_id, service, previous))
            continue
        current = parse(event["kv"])
        if current is not None:
            changes.append(Change(_put_kind(previous, current), instance_id, service, current))
    return changes


def _put_kind(previous: Registration | None, current: Registration) -> ChangeKind:
    if previous is None:
        return "registered"
    # set_health rewrites state and reason only; a re-register always moves renewed_at on
    health = {"state": current.state, "reason": current.reason}
    return "health" if previous.model_copy(update=health) == current else "updated"
