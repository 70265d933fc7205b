"""Render docs/configuration.md from the configuration models.

The models are the single source of truth: every key, type, default and description in the
document comes from them, and a test fails when the committed file differs from what this
module renders. Regenerate with ``python -m medianest.config.docs > docs/configuration.md``.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from medianest.config.settings import Settings

INTRO = """\
# Configuration

MediaNest reads one configuration, from three places; the first that sets a key wins:

1. command-line flags (`medianest serve --port 9000`),
2. environment variables `MEDIANEST_<SECTION>__<KEY>` (nested keys joined with `__`, e.g.
   `MEDIANEST_DATABASE__URL`, `MEDIANEST_UPSTREAMS__PLEX__TOKEN`),
3. a TOML file: `--config FILE`, else `$MEDIANEST_CONFIG`, else `./medianest.toml` if present.

Nothing is required: with no configuration at all the hub keeps a SQLite file under `./data`
and needs nothing else installed. Unknown keys are errors (a typo is never silently ignored).
An invalid configuration stops start-up with exit code 2 and one line per bad key: the key,
the value (secrets shown as `***`) and what was expected. Secrets (`token`, `api_key`,
`password`...) never appear in logs, reprs or error messages.

Check a configuration without starting anything: `medianest doctor --config FILE`.

## Example

```toml
data_dir = "/var/lib/medianest"

[server]
host = "0.0.0.0"
port = 8080
roles = ["gateway", "api", "realtime", "workers"]

[database]
url = "postgresql://medianest:secret@127.0.0.1:5432/medianest"

[log]
level = "info"
format = "json"

[upstreams.plex]
url = "http://192.168.1.10:32400"
token = "your-plex-token"

[upstreams.overseerr]
url = "http://192.168.1.10:5055"
api_key = "your-overseerr-api-key"

[upstreams.overseerr.policy.timeout]
attempt = 5.0

[upstreams.overseerr.policy.breaker]
failure_rate_threshold = 50
```

This file is generated from the configuration models by
`python -m medianest.config.docs > docs/configuration.md`; edit the models, not this file.
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        suffix = " or none" if type(None) in args else ""
        return " | ".join(names) + suffix
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (tuple, list):
        inner = _type_name(args[0]) if args else "value"
        return f"list of {inner}"
    if origin is dict:
        return f"table of {_type_name(args[1])}"
    if annotation is SecretStr:
        return "secret string"
    name = getattr(annotation, "__name__", str(annotation))
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(name, name)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(section)"
        return f"`{json.dumps(value)}`" if value not in ({}, []) else "empty"
    if field.default is PydanticUndefined:
        return "**required**"
    if field.default is None:
        return "none"
    value = field.default
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, Path):
        value = str(value)
    return f"`{json.dumps(value)}`"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _sections(
    model: type[BaseModel], path: str, env: str
) -> Iterator[tuple[str, str, type[BaseModel]]]:
    yield path, env, model
    for name, field in model.model_fields.items():
        annotation = field.annotation
        nested = _model_of(annotation)
        if nested is None:
            continue
        origin = typing.get_origin(annotation)
        if origin is dict:
            yield from _sections(
                nested, f"{path}.{name}.<name>".lstrip("."), f"{env}{name.upper()}__<NAME>__"
            )
        elif origin in (tuple, list) or (env == "" and path):
            yield from _sections(nested, f"{path}.{name}".lstrip("."), "")
        else:
            yield from _sections(nested, f"{path}.{name}".lstrip("."), f"{env}{name.upper()}__")


def render() -> str:
    """The whole Markdown document."""
    out = [INTRO]
    for path, env, model in _sections(Settings, "", "MEDIANEST_"):
        title = f"[{path}]" if env or not path else f"[[{path}]] (TOML only)"
        out.append(f"\n## `{title}`\n" if path else "\n## Top-level keys\n")
        doc = (model.__doc__ or "").strip().split("\n\n")[0]
        if doc:
            out.append(" ".join(doc.split()) + "\n")
        out.append("| key | type | default | environment | meaning |")
        out.append("|---|---|---|---|---|")
        for name, field in model.model_fields.items():
            if (
                _model_of(field.annotation) is not None
                and typing.get_origin(field.annotation) is not dict
            ):
                continue
            description = " ".join((field.description or "").split())
            if field.examples:
                description += f" Example: `{field.examples[0]}`."
            variable = f"`{env}{name.upper()}`" if env else "—"
            out.append(
                f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | "
                f"{variable} | {description} |"
            )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
