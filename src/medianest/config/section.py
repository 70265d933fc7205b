"""The base of every configuration section (its own module so sections in other modules can
derive from it without importing :mod:`medianest.config.settings`, which imports them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every configuration section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
