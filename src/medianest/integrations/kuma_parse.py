"""Uptime Kuma answers into MediaNest models (NOTES.md 4), checking the contract.

Read through :class:`~medianest.integrations.overseerr_parse.Node`, so a missing required
field raises :class:`~medianest.errors.UpstreamContractError` naming it. Kuma's quirks are
evened out here: one ``incident`` (v1, 2.0) or a list ``incidents`` (v2.1+) both become a
list; beat times (UTC, no zone marker) become aware UTC datetimes; beat statuses 0..3 map to
:class:`~medianest.integrations.models.HealthStatus` (another number is ``unknown``, its
value kept); uptimes are 0..1 ratios; metric labels left unset (``"null"``) become ``None``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from medianest import errors
from medianest.integrations.models import HealthStatus, Model
from medianest.integrations.overseerr_parse import Node

BEAT_STATUS = {
    0: HealthStatus.DOWN,
    1: HealthStatus.UP,
    2: HealthStatus.PENDING,
    3: HealthStatus.MAINTENANCE,
}
#: Labels every monitor gauge has (``monitor_id`` in v2 only); any other label is a tag (v2).
_NOT_TAGS = {"monitor_id", "monitor_name", "monitor_type", "monitor_url", "monitor_hostname"}
_NOT_TAGS |= {"monitor_port", "window"}


class Incident(Model):
    """A message pinned to a status page; ``style`` is info, warning, danger, primary..."""

    id: int | None = None
    title: str
    content: str | None = None
    style: str | None = None
    pinned: bool = False
    active: bool = True
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Maintenance(Model):
    """A maintenance window that is active now (Kuma lists no others publicly)."""

    id: int
    title: str
    description: str | None = None
    status: str | None = None
    strategy: str | None = None


class PageMonitor(Model):
    """A monitor as a status page shows it (``url`` only when the page shares it)."""

    id: int
    name: str
    type: str | None = None
    url: str | None = None
    tags: dict[str, str | None] = {}
    cert_days_remaining: int | None = None
    cert_valid: bool | None = None


class MonitorGroup(Model):
    name: str
    monitors: list[PageMonitor]


class StatusPage(Model):
    """``/api/status-page/{slug}``: the page, its incidents, monitor groups and maintenance."""

    slug: str
    title: str
    description: str | None = None
    incidents: list[Incident]
    groups: list[MonitorGroup]
    maintenance: list[Maintenance]


class Heartbeat(Model):
    """One check of a monitor: its status (the number in ``status_code``) and when, in UTC."""

    status: HealthStatus
    status_code: int
    time: datetime
    ping_ms: float | None = None


class HeartbeatReport(Model):
    """The recent beats of each public monitor (oldest first) and its 24 h uptime ratio."""

    beats: dict[int, list[Heartbeat]]
    uptime_24h: dict[int, float]


class MonitorMetric(Model):
    """One monitor's gauges from ``/metrics`` (``uptime`` and ``avg_response_s`` by window)."""

    monitor_id: int | None = None
    name: str
    type: str | None = None
    url: str | None = None
    hostname: str | None = None
    port: int | None = None
    status: HealthStatus | None = None
    status_code: int | None = None
    response_time_ms: float | None = None
    cert_days_remaining: float | None = None
    cert_valid: bool | None = None
    uptime: dict[str, float] = {}
    avg_response_s: dict[str, float] = {}
    tags: dict[str, str | None] = {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _digits(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def parse_status_page(body: Node, slug: str) -> StatusPage:
    config = body.obj("config")
    if "incidents" in body.data:
        found = body.nodes("incidents")
    elif "incident" in body.data:
        found = [n] if (n := body.node("incident")) else []
    else:
        raise body.error("without 'incidents' (v2) or 'incident' (v1)")
    incidents = [
        Incident(
            id=n.opt_integer("id"),
            title=n.text("title"),
            content=n.opt_text("content"),
            style=n.opt_text("style"),
            pinned=bool(n.data.get("pin")),
            active=n.data.get("active", True) is not False,
            created_at=n.time("createdDate"),
            updated_at=n.time("lastUpdatedDate"),
        )
        for n in found
    ]
    groups = [
        MonitorGroup(
            name=g.text("name"), monitors=[_page_monitor(m) for m in g.nodes("monitorList")]
        )
        for g in body.nodes("publicGroupList")
    ]
    maintenance = [
        Maintenance(
            id=m.integer("id"),
            title=m.text("title"),
            description=m.opt_text("description"),
            status=m.opt_text("status"),
            strategy=m.opt_text("strategy"),
        )
        for m in body.nodes("maintenanceList", required=False)
    ]
    return StatusPage(
        slug=config.opt_text("slug") or slug,
        title=config.text("title"),
        description=config.opt_text("description"),
        incidents=incidents,
        groups=groups,
        maintenance=maintenance,
    )


def _page_monitor(m: Node) -> PageMonitor:
    valid = m.data.get("validCert")
    return PageMonitor(
        id=m.integer("id"),
        name=m.text("name"),
        type=m.opt_text("type"),
        url=m.opt_text("url"),
        tags={t.text("name"): t.opt_text("value") for t in m.nodes("tags", required=False)},
        cert_days_remaining=m.opt_integer("certExpiryDaysRemaining"),
        cert_valid=valid if isinstance(valid, bool) else None,
    )


def parse_heartbeats(body: Node) -> HeartbeatReport:
    listed, uptimes = body.obj("heartbeatList"), body.node("uptimeList")
    beats: dict[int, list[Heartbeat]] = {}
    for key in listed.data:
        if (monitor_id := _digits(key)) is None:
            raise body.error(f"with a heartbeatList key that is not a monitor id: {key!r}")
        beats[monitor_id] = [_beat(n) for n in listed.nodes(key)]
    uptime: dict[int, float] = {}
    for key, value in (uptimes.data if uptimes else {}).items():
        ident, _, window = key.rpartition("_")
        ratio = _number(value)
        if window != "24" or _digits(ident) is None:
            continue
        if ratio is None or not 0 <= ratio <= 1:
            raise body.error(f"with uptimeList.{key} not a ratio from 0 to 1: {value!r}")
        uptime[int(ident)] = ratio
    return HeartbeatReport(beats=beats, uptime_24h=uptime)


def _beat(n: Node) -> Heartbeat:
    code, time = n.integer("status"), n.time("time")
    if time is None:
        raise n.error(f"without the required time '{n.name('time')}'")
    status = BEAT_STATUS.get(code, HealthStatus.UNKNOWN)
    return Heartbeat(
        status=status, status_code=code, time=time, ping_ms=_number(n.data.get("ping"))
    )


def parse_metrics(service: str, text: str) -> tuple[list[MonitorMetric], str | None]:
    """The monitors' gauges in Kuma's Prometheus text, and the ``app_version`` it reports."""
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, IndexError) as exc:
        raise errors.UpstreamContractError(
            f"{service} answered /metrics with text that is not Prometheus: {exc}",
            service=service,
            endpoint="/metrics",
        ) from exc
    found: dict[str, dict[str, Any]] = {}
    version = None
    for sample in (s for family in families for s in family.samples):
        labels = {k: (None if v == "null" else v) for k, v in sample.labels.items()}
        if sample.name == "app_version":
            version = labels.get("version")
        if not labels.get("monitor_name"):
            continue
        key = labels.get("monitor_id") or labels.get("monitor_name") or ""
        entry = found.setdefault(key, {"labels": labels, "uptime": {}, "avg_response_s": {}})
        window, value = labels.get("window") or "", sample.value
        if sample.name == "monitor_status":
            entry["status_code"] = int(value)
        elif sample.name == "monitor_response_time":
            entry["response_time_ms"] = value if value >= 0 else None
        elif sample.name == "monitor_cert_days_remaining":
            entry["cert_days_remaining"] = value
        elif sample.name == "monitor_cert_is_valid":
            entry["cert_valid"] = value == 1
        elif sample.name == "monitor_uptime_ratio":
            entry["uptime"][window] = value
        elif sample.name == "monitor_response_time_seconds":
            entry["avg_response_s"][window] = value
    return [_metric(entry) for entry in found.values()], version


def _metric(entry: dict[str, Any]) -> MonitorMetric:
    labels: dict[str, str | None] = entry.pop("labels")
    code = entry.get("status_code")
    return MonitorMetric(
        monitor_id=_digits(labels.get("monitor_id")),
        name=labels["monitor_name"] or "",
        type=labels.get("monitor_type"),
        url=labels.get("monitor_url"),
        hostname=labels.get("monitor_hostname"),
        port=_digits(labels.get("monitor_port")),
        status=None if code is None else BEAT_STATUS.get(code, HealthStatus.UNKNOWN),
        tags={k: v for k, v in labels.items() if k not in _NOT_TAGS},
        **entry,
    )
