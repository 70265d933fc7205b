"""Read-only registry of instances named in configuration (``static://``).

Two ways to say which instances exist:

* ``static://`` with the ``instances=`` option: a list of :class:`ServiceInstance` values or
  plain dicts (``discovery.instances`` in ``medianest.toml``);
* ``static://?file=/etc/medianest/instances.toml``: a TOML file of ``[[instances]]``
  tables, read when the registry starts (both forms may be combined).

Every definition is validated up front; all mistakes are reported together in one
:class:`~medianest.errors.ConfigurationError` whose ``problems`` name each field
(``discovery.instances[1].endpoints.0``). ``register``, ``heartbeat`` and ``deregister``
raise ``ConfigurationError``: the configuration is the source of truth, not the API.
``set_health`` does work, in memory: health checks of configured instances still decide
where traffic goes, and watchers see those ``health`` changes.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError as PydanticValidationError

from medianest.discovery.backends.memory import MemoryRegistry, WallClock
from medianest.discovery.base import Registration, ServiceInstance
from medianest.errors import ConfigurationError

InstanceSource = ServiceInstance | Mapping[str, Any]


class StaticRegistry(MemoryRegistry):
    """The configured instances, never expiring, with health verdicts kept in memory."""

    read_only = True
    backend_name = "static://"

    def __init__(
        self,
        instances: Iterable[InstanceSource] = (),
        *,
        file: str | Path | None = None,
        clock: WallClock | None = None,
    ) -> None:
        super().__init__(clock=clock, sweep_interval=0)
        self.file = Path(file) if file else None
        self._given = _validate(list(instances), "discovery.instances")
        self._loaded = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> StaticRegistry:
        query = parse_qs(urlsplit(url).query)
        unknown = sorted(set(query) - {"file"})
        if unknown:
            raise ConfigurationError(
                f"unknown static:// option(s) {', '.join(unknown)}; only ?file=<path.toml>",
                problems=[("discovery.url", url, "static:// or static://?file=<path.toml>")],
            )
        if "file" in query and "file" not in options:
            options["file"] = query["file"][-1]
        return cls(**options)

    def __repr__(self) -> str:
        return f"StaticRegistry({len(self._records)} instances, file={self.file})"

    async def start(self) -> None:
        if self._loaded:
            return
        from_file: list[ServiceInstance] = []
        if self.file is not None:
            from_file = await asyncio.to_thread(_load_file, self.file)
        everything = [*self._given, *from_file]
        counts = Counter(instance.id for instance in everything)
        duplicates = sorted(instance_id for instance_id, n in counts.items() if n > 1)
        if duplicates:
            raise ConfigurationError(
                f"static service instances repeat the id(s) {', '.join(duplicates)}",
                problems=[("discovery.instances", d, "a unique id") for d in duplicates],
            )
        now = self._clock()
        for instance in everything:
            self._records[instance.id] = Registration(
                instance=instance, registered_at=now, renewed_at=now
            )
        self._loaded = True
        await super().start()

    async def register(self, instance: ServiceInstance, *, ttl: float | None = None) -> None:
        raise self._read_only("register")

    async def heartbeat(self, instance_id: str) -> None:
        raise self._read_only("heartbeat")

    async def deregister(self, instance_id: str) -> bool:
        raise self._read_only("deregister")

    def _read_only(self, operation: str) -> ConfigurationError:
        return ConfigurationError(
            f"the static:// service registry is read-only: {operation} is not possible; "
            "change discovery.instances (or the instances file) instead",
            problems=[("discovery.url", "static://", "a writable registry for " + operation)],
        )


def _load_file(path: Path) -> list[ServiceInstance]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the static instances file {path}: {exc.strerror or exc}",
            problems=[("discovery.url", str(path), "a readable TOML file")],
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(
            f"the static instances file {path} is not valid TOML: {exc}",
            problems=[("discovery.url", str(path), "valid TOML with [[instances]] tables")],
        ) from exc
    entries = data.get("instances", [])
    extra = sorted(set(data) - {"instances"})
    if not isinstance(entries, list) or extra:
        raise ConfigurationError(
            f"the static instances file {path} must hold only [[instances]] tables",
            problems=[(str(path), ", ".join(extra) or "instances", "[[instances]] tables")],
        )
    return _validate(entries, f"{path}: instances")


def _validate(sources: list[Any], where: str) -> list[ServiceInstance]:
    """Every definition as a ServiceInstance, or one ConfigurationError listing all faults."""
    instances: list[ServiceInstance] = []
    problems: list[tuple[str, str, str]] = []
    for index, source in enumerate(sources):
        if isinstance(source, ServiceInstance):
            instances.append(source)
            continue
        try:
            instances.append(ServiceInstance.model_validate(source))
        except PydanticValidationError as exc:
            for error in exc.errors():
                location = ".".join(str(part) for part in error["loc"])
                key = f"{where}[{index}]" + (f".{location}" if location else "")
                problems.append((key, repr(error.get("input"))[:200], error["msg"]))
    if problems:
        fields = ", ".join(key for key, _, _ in problems)
        raise ConfigurationError(f"invalid static service instance(s): {fields}", problems=problems)
    return instances
