"""The ``[messaging]`` settings section: which broker, and how deliveries are retried."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pydantic import Field, model_validator

from medianest.backends import url_scheme
from medianest.config.section import Section

if TYPE_CHECKING:
    from medianest.messaging.base import RetryPolicy


class MessagingSettings(Section):
    """The message broker: its URL, the default retry policy and shutdown behaviour."""

    url: str = Field(
        "",
        description="Broker URL: empty for the embedded SQLite broker in "
        "`<data_dir>/broker.db` (a file of its own, not the main database), "
        "`sqlite:///path/broker.db`, `memory://` (one process, nothing kept), "
        "`redis://host:6379/0`, `amqp://user:pass@host:5672/` or `nats://host:4222`.",
        examples=["redis://127.0.0.1:6379/0", "amqp://guest:guest@127.0.0.1:5672/"],
    )
    max_attempts: int = Field(
        5,
        ge=1,
        le=1000,
        description="Deliveries of a message to a group before it goes to the dead-letter "
        "queue (the first delivery counts).",
    )
    retry_initial: float = Field(
        0.5, ge=0, le=3600, description="Seconds before the first redelivery after a failure."
    )
    retry_multiplier: float = Field(
        2.0, ge=1, le=100, description="Factor by which each further redelivery waits longer."
    )
    retry_max: float = Field(
        60.0, ge=0, le=86400, description="Longest wait before a redelivery, in seconds."
    )
    poll_interval: float = Field(
        0.2,
        gt=0,
        le=60,
        description="SQLite broker: seconds between looks for messages published by other "
        "processes and for leases of crashed consumers (same-process publishes wake "
        "consumers at once).",
    )
    drain_timeout: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="Seconds a shutdown lets running handlers finish; unfinished messages "
        "are not acked and go to another consumer.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.retry_max < self.retry_initial:
            raise ValueError("retry_max must not be shorter than retry_initial")
        return self

    def retry_policy(self) -> RetryPolicy:
        """The default :class:`RetryPolicy` of subscriptions."""
        from medianest.messaging.base import RetryPolicy

        return RetryPolicy(
            max_attempts=self.max_attempts,
            initial=self.retry_initial,
            multiplier=self.retry_multiplier,
            maximum=self.retry_max,
        )

    def broker_url(self, data_dir: Path) -> str:
        """``url``, or the embedded default ``sqlite:///<data_dir>/broker.db``."""
        return self.url or f"sqlite:///{data_dir / 'broker.db'}"

    def broker_options(self, url: str) -> dict[str, Any]:
        """What ``create_broker(url, **options)`` takes from these settings: ``retry`` and
        ``drain_timeout`` for every backend, ``poll_interval`` for SQLite."""
        options: dict[str, Any] = {
            "retry": self.retry_policy(),
            "drain_timeout": self.drain_timeout,
        }
        if url_scheme(url).startswith("sqlite"):
            options["poll_interval"] = self.poll_interval
        return options
