"""The Prometheus text Uptime Kuma serves on ``/metrics`` (NOTES.md section 4).

Gauges per monitor, labelled ``monitor_name``, ``monitor_type``, ``monitor_url``,
``monitor_hostname``, ``monitor_port`` (unset labels render as the string ``"null"``); v2
adds ``monitor_id``, one label per tag, and the windowed ``monitor_uptime_ratio`` and
``monitor_response_time_seconds``.
"""

from __future__ import annotations

from medianest.simulators.kuma_data import KumaState, Monitor

_HELP = {
    "monitor_cert_days_remaining": ("The number of days remaining until the certificate expires"),
    "monitor_cert_is_valid": "Is the certificate still valid? (1 = Yes, 0= No)",
    "monitor_response_time": "Monitor Response Time (ms)",
    "monitor_status": "Monitor Status (1 = UP, 0= DOWN, 2= PENDING, 3= MAINTENANCE)",
}


def render_metrics(state: KumaState) -> str:
    """The Prometheus exposition Kuma serves on ``/metrics``."""
    lines: list[str] = []
    gauges = dict(_HELP)
    samples: dict[str, list[str]] = {name: [] for name in gauges}
    if state.version >= 2:
        gauges["monitor_uptime_ratio"] = "Monitor uptime ratio over a window"
        gauges["monitor_response_time_seconds"] = "Monitor average response time over a window"
        samples["monitor_uptime_ratio"] = []
        samples["monitor_response_time_seconds"] = []
    for monitor in state.monitors:
        labels = _labels(state, monitor)
        minute = state.minute(monitor)
        status = state.status_at(monitor, minute)
        ping = state.ping_at(monitor, minute, status)
        samples["monitor_status"].append(f"monitor_status{{{labels}}} {status}")
        samples["monitor_response_time"].append(
            f"monitor_response_time{{{labels}}} {ping if ping is not None else -1}"
        )
        if monitor.cert_days is not None:
            samples["monitor_cert_days_remaining"].append(
                f"monitor_cert_days_remaining{{{labels}}} {monitor.cert_days}"
            )
            samples["monitor_cert_is_valid"].append(f"monitor_cert_is_valid{{{labels}}} 1")
        if state.version >= 2:
            for window, minutes, stride in (
                ("1d", 1440, 1),
                ("30d", 43_200, 60),
                ("365d", 525_600, 720),
            ):
                ratio = state.uptime(monitor, minutes, stride)
                samples["monitor_uptime_ratio"].append(
                    f'monitor_uptime_ratio{{{labels},window="{window}"}} {ratio}'
                )
                seconds = (ping or 50) / 1000
                samples["monitor_response_time_seconds"].append(
                    f'monitor_response_time_seconds{{{labels},window="{window}"}} {seconds}'
                )
    for name, help_text in gauges.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples[name]]
    version = "2.0.2" if state.version >= 2 else "1.23.17"
    major, minor, patch = version.split(".")
    lines += [
        "# HELP app_version The service version",
        "# TYPE app_version gauge",
        f'app_version{{version="{version}",major="{major}",minor="{minor}",patch="{patch}"}} 1',
        "# HELP process_cpu_user_seconds_total Total user CPU time spent in seconds.",
        "# TYPE process_cpu_user_seconds_total counter",
        "process_cpu_user_seconds_total 12.5",
    ]
    return "\n".join(lines) + "\n"


def _labels(state: KumaState, monitor: Monitor) -> str:
    def quote(value: object) -> str:
        text = "null" if value is None else str(value)
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    pairs: list[tuple[str, object]] = []
    if state.version >= 2:
        pairs.append(("monitor_id", monitor.id))
    pairs += [
        ("monitor_name", monitor.name),
        ("monitor_type", monitor.type),
        ("monitor_url", monitor.url),
        ("monitor_hostname", monitor.hostname),
        ("monitor_port", monitor.port),
    ]
    if state.version >= 2:
        pairs += [(name, value) for name, value in monitor.tags]
    return ",".join(f"{k}={quote(v)}" for k, v in pairs)
