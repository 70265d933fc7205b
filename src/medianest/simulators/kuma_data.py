"""Monitors, heartbeats and metrics of the Uptime Kuma simulator (NOTES.md section 4).

Heartbeats are a pure function of the monitor, the seed and the minute: monitor *m* beats
once a minute (at second ``3 * m``), so the list a client gets only depends on the clock.
Statuses are ints (0 DOWN, 1 UP, 2 PENDING, 3 MAINTENANCE); beat ``time`` is UTC without a
zone marker (``"2025-01-01 10:00:03.137"``); ``ping`` is ms or null; uptime is a 0..1 ratio.
A test can force a monitor's status from now on with :meth:`KumaState.set_status`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from medianest.simulators.seeds import mix

DOWN, UP, PENDING, MAINTENANCE = 0, 1, 2, 3
Health = Literal["up", "flaky", "down"]


@dataclass
class Monitor:
    id: int
    name: str
    type: str
    group: str
    health: Health
    url: str | None = None
    hostname: str | None = None
    port: int | None = None
    cert_days: int | None = None
    send_url: bool = False
    tags: tuple[tuple[str, str], ...] = ()


def default_monitors() -> list[Monitor]:
    return [
        Monitor(
            1,
            "Plex Media Server",
            "http",
            "Media",
            "up",
            url="http://plex.lan:32400/identity",
            send_url=True,
            tags=(("env", "home"),),
        ),
        Monitor(
            2,
            "Overseerr",
            "http",
            "Media",
            "up",
            url="https://requests.example.com/api/v1/status",
            cert_days=45,
        ),
        Monitor(
            3, "plex.tv", "keyword", "Media", "up", url="https://plex.tv/api/v2/ping", cert_days=80
        ),
        Monitor(4, "NAS", "ping", "Infrastructure", "flaky", hostname="nas.lan"),
        Monitor(
            5, "Downloads", "port", "Infrastructure", "down", hostname="downloads.lan", port=8080
        ),
    ]


def kuma_time(epoch: float) -> str:
    """Kuma's public beat time: UTC, millisecond precision, no zone marker."""
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


@dataclass
class KumaState:
    """The simulated Kuma: monitors, incidents, forced statuses."""

    seed: int
    version: int
    slug: str
    clock: Callable[[], float]
    monitors: list[Monitor] = field(default_factory=default_monitors)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    forced: dict[int, tuple[int, int]] = field(default_factory=dict)

    def set_status(self, monitor_id: int, status: int) -> None:
        """From the current minute on, every beat of ``monitor_id`` has ``status``."""
        monitor = next(m for m in self.monitors if m.id == monitor_id)
        self.forced[monitor.id] = (status, self.minute(monitor))

    def add_incident(self, title: str, content: str, style: str = "warning") -> dict[str, Any]:
        now = kuma_time(self.clock())[:19]
        incident = {
            "id": len(self.incidents) + 1,
            "style": style,
            "title": title,
            "content": content,
            "pin": True,
            "active": True,
            "createdDate": now,
            "lastUpdatedDate": now,
            "status_page_id": 1,
        }
        self.incidents.append(incident)
        return incident

    def minute(self, monitor: Monitor) -> int:
        """The current beat (minute number) of ``monitor``."""
        return int((self.clock() - 3 * monitor.id) // 60)

    def status_at(self, monitor: Monitor, minute: int) -> int:
        forced = self.forced.get(monitor.id)
        if forced is not None and minute >= forced[1]:
            return forced[0]
        if monitor.health == "flaky":
            return DOWN if mix(self.seed, monitor.id, minute) % 20 == 0 else UP
        if monitor.health == "down" and minute > self.minute(monitor) - 10:
            return DOWN
        return UP

    def ping_at(self, monitor: Monitor, minute: int, status: int) -> int | None:
        return 15 + mix(self.seed, monitor.id, minute, 1) % 90 if status == UP else None

    def beats(self, monitor: Monitor, count: int) -> list[dict[str, Any]]:
        """The last ``count`` beats of a monitor, oldest first."""
        last = self.minute(monitor)
        out = []
        for minute in range(last - count + 1, last + 1):
            status = self.status_at(monitor, minute)
            stamp = minute * 60 + 3 * monitor.id + (monitor.id * 137 % 1000) / 1000
            out.append(
                {
                    "status": status,
                    "time": kuma_time(stamp),
                    "msg": "",
                    "ping": self.ping_at(monitor, minute, status),
                }
            )
        return out

    def uptime(self, monitor: Monitor, minutes: int, stride: int = 1) -> float:
        last = self.minute(monitor)
        sample = range(last - minutes + 1, last + 1, stride)
        up = sum(1 for m in sample if self.status_at(monitor, m) in (UP, MAINTENANCE))
        return round(up / len(sample), 4)

    def status_page(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "slug": self.slug,
            "title": "MediaNest Services",
            "description": "Is the media stack up?",
            "icon": "/icon.svg",
            "theme": "auto",
            "published": True,
            "showTags": True,
            "customCSS": "body {\n  \n}\n",
            "footerText": None,
            "showPoweredBy": True,
            "showCertificateExpiry": True,
        }
        if self.version >= 2:
            config.update(autoRefreshInterval=300, showOnlyLastHeartbeat=False, rssTitle=None)
            config.update(analyticsId=None, analyticsScriptUrl=None, analyticsType=None)
        else:
            config["googleAnalyticsId"] = None
        groups: dict[str, list[dict[str, Any]]] = {}
        for monitor in self.monitors:
            item: dict[str, Any] = {
                "id": monitor.id,
                "name": monitor.name,
                "sendUrl": int(monitor.send_url),
                "type": monitor.type,
            }
            if monitor.send_url:
                item["url"] = monitor.url
            item["tags"] = [
                {
                    "id": i + 1,
                    "monitor_id": monitor.id,
                    "tag_id": i + 1,
                    "value": value,
                    "name": name,
                    "color": "#2563EB",
                }
                for i, (name, value) in enumerate(monitor.tags)
            ]
            item["certExpiryDaysRemaining"] = (
                monitor.cert_days if monitor.cert_days is not None else -1
            )
            item["validCert"] = monitor.cert_days is not None
            groups.setdefault(monitor.group, []).append(item)
        public = [
            {"id": i + 1, "name": name, "weight": i + 1, "monitorList": items}
            for i, (name, items) in enumerate(groups.items())
        ]
        page: dict[str, Any] = {"config": config}
        if self.version >= 2:
            page["incidents"] = [dict(i) for i in self.incidents]
        else:
            incident = None
            if self.incidents:
                incident = {
                    k: v
                    for k, v in self.incidents[-1].items()
                    if k not in ("active", "status_page_id")
                }
            page["incident"] = incident
        page.update(publicGroupList=public, maintenanceList=[])
        return page

    def heartbeats(self) -> dict[str, Any]:
        count = 100 if self.version >= 2 else 50
        return {
            "heartbeatList": {str(m.id): self.beats(m, count) for m in self.monitors},
            "uptimeList": {f"{m.id}_24": self.uptime(m, 1440) for m in self.monitors},
        }
