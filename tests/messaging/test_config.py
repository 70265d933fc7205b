"""The ``[messaging]`` settings section."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError as ModelError

from medianest.config.messaging import MessagingSettings
from medianest.messaging import RetryPolicy


def test_defaults_name_the_embedded_broker() -> None:
    settings = MessagingSettings()
    assert settings.broker_url(Path("/srv/mn")) == "sqlite:////srv/mn/broker.db"
    assert settings.broker_url(Path("data")) == "sqlite:///data/broker.db"
    assert settings.retry_policy() == RetryPolicy(5, 0.5, 2.0, 60.0)
    options = settings.broker_options("sqlite:///data/broker.db")
    assert options == {
        "retry": settings.retry_policy(),
        "drain_timeout": 10.0,
        "poll_interval": 0.2,
    }
    assert "poll_interval" not in settings.broker_options("redis://127.0.0.1:6379/0")


def test_a_configured_url_wins() -> None:
    settings = MessagingSettings(url="memory://", max_attempts=2, retry_initial=1, retry_max=5)
    assert settings.broker_url(Path("data")) == "memory://"
    assert settings.retry_policy().delay(10) == 5


@pytest.mark.parametrize(
    "bad",
    [{"max_attempts": 0}, {"retry_initial": 10, "retry_max": 1}, {"poll_interval": 0}, {"nope": 1}],
)
def test_bad_values_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ModelError):
        MessagingSettings.model_validate(bad)
