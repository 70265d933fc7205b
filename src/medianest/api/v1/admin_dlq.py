"""``/admin/dead-letters``: inspect, replay and purge the broker's dead letters over HTTP.

A dead letter is a message a consumer group gave up on (see :mod:`medianest.messaging.base`):
it is listed with the last error, the number of attempts and the whole original envelope
(headers included). Replaying delivers it to its group again, attempt 1, and removes it.
The endpoints need the ``admin`` scope; the broker is the hub's (``app.state.broker``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from medianest.api.auth import requires
from medianest.errors import ConfigurationError
from medianest.messaging import Broker, DeadLetter
from medianest.security.roles import ADMIN


def broker(request: Request) -> Broker:
    """The hub's broker (``app.state.broker``)."""
    found: Broker | None = getattr(request.app.state, "broker", None)
    if found is None:
        raise ConfigurationError("the message broker is not set up on this hub")
    return found


require_dlq_admin = requires(ADMIN)

router = APIRouter(
    prefix="/admin/dead-letters", tags=["admin"], dependencies=[Depends(require_dlq_admin)]
)
HubBroker = Annotated[Broker, Depends(broker)]
LetterId = Annotated[str, PathParam(max_length=64, description="Dead letter id.")]
TopicFilter = Annotated[str | None, Query(max_length=200, description="Only this topic.")]
GroupFilter = Annotated[str | None, Query(max_length=100, description="Only this group.")]


class DeadLetterView(BaseModel):
    """A dead letter as the API shows it; ``message`` is the versioned wire envelope."""

    id: str
    topic: str
    group: str
    error: str = Field(description="The last handler error (or why it was given up).")
    attempts: int = Field(description="Deliveries made before it was given up.")
    failed_at: datetime
    message: dict[str, Any] = Field(description="The envelope: id, payload, headers...")

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterView:
        return cls(
            id=letter.id,
            topic=letter.message.topic,
            group=letter.group,
            error=letter.error,
            attempts=letter.attempts,
            failed_at=letter.failed_at,
            message=letter.message.to_wire(),
        )


class Replayed(BaseModel):
    """The message as it is delivered again."""

    dead_letter_id: str
    group: str
    message: dict[str, Any]


class Purged(BaseModel):
    purged: int = Field(description="How many dead letters were deleted.")


@router.get("", summary="List dead letters, oldest first")
async def list_dead_letters(
    source: HubBroker,
    topic: TopicFilter = None,
    group: GroupFilter = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterView]:
    return [DeadLetterView.of(letter) for letter in await source.dead_letters(topic, group, limit)]


@router.get("/{dead_letter_id}", summary="One dead letter")
async def get_dead_letter(dead_letter_id: LetterId, source: HubBroker) -> DeadLetterView:
    return DeadLetterView.of(await source.dead_letter(dead_letter_id))


@router.post("/{dead_letter_id}/replay", summary="Deliver a dead letter to its group again")
async def replay_dead_letter(dead_letter_id: LetterId, source: HubBroker) -> Replayed:
    letter = await source.dead_letter(dead_letter_id)
    message = await source.replay(dead_letter_id)
    return Replayed(dead_letter_id=letter.id, group=letter.group, message=message.to_wire())


@router.delete("", summary="Purge dead letters (all, or of a topic and/or group)")
async def purge_dead_letters(
    source: HubBroker, topic: TopicFilter = None, group: GroupFilter = None
) -> Purged:
    return Purged(purged=await source.purge(topic, group))
