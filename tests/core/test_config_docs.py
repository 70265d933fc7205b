"""docs/configuration.md documents every key: it is exactly what the models render."""

from __future__ import annotations

from pathlib import Path

from medianest.config.docs import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_doc_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: python -m medianest.config.docs > docs/configuration.md"
    )


def test_every_key_has_a_description() -> None:
    undocumented = [
        line for line in render().splitlines() if line.startswith("| `") and line.endswith("|  |")
    ]
    assert undocumented == []
    assert "`MEDIANEST_UPSTREAMS__<NAME>__POLICY__BREAKER__OPEN_DURATION`" in render()
