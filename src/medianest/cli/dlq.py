"""``medianest dlq``: list, show, replay and purge the broker's dead letters.

A dead letter is a message a consumer group gave up on after ``max_attempts`` deliveries,
kept with the last error, the attempt count and its original headers. ``replay`` delivers
it to its group again (attempt 1) and removes it; ``purge`` deletes dead letters for good.

The broker is the one at ``--broker URL`` (also ``$MEDIANEST_MESSAGING__URL``), else the
configured one, else the embedded SQLite broker in ``<data_dir>/broker.db``. Exit codes: 0
done, 1 unknown dead letter or a failed operation, 2 bad options or configuration.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from medianest.cli.main import ConfigOption, out_console, run_async, settings_from
from medianest.config import Settings
from medianest.messaging import Broker, DeadLetter, create_broker

T = TypeVar("T")

app = typer.Typer(
    name="dlq",
    help="List, show, replay and purge dead letters of the message broker.",
    no_args_is_help=True,
)

BrokerOption = Annotated[
    str | None,
    typer.Option(
        "--broker",
        envvar="MEDIANEST_MESSAGING__URL",
        help="Broker URL (default: the configured broker, else sqlite:///<data_dir>/broker.db).",
        show_default=False,
    ),
]
TopicOption = Annotated[str | None, typer.Option("--topic", help="Only this topic.")]
GroupOption = Annotated[str | None, typer.Option("--group", help="Only this consumer group.")]
IdArgument = Annotated[str, typer.Argument(help="Dead letter id (from `medianest dlq list`).")]


def broker_url(option: str | None, settings: Settings) -> str:
    """The broker URL: ``--broker``, else ``[messaging] url``, else the embedded default."""
    if option:
        return option
    return settings.messaging.broker_url(settings.data_dir)


def _run(url: str, action: Callable[[Broker], Awaitable[T]]) -> T:
    async def run() -> T:
        async with create_broker(url) as broker:
            return await action(broker)

    result: T = run_async(run())
    return result


def _broker(option: str | None, config: Path | None) -> str:
    return broker_url(option, settings_from(config))


def _when(letter: DeadLetter) -> str:
    return letter.failed_at.strftime("%Y-%m-%d %H:%M:%S UTC")


@app.command("list")
def list_dead_letters(
    topic: TopicOption = None,
    group: GroupOption = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="At most this many.")
    ] = 50,
    broker: BrokerOption = None,
    config: ConfigOption = None,
) -> None:
    """List dead letters, oldest first."""
    url = _broker(broker, config)
    letters = _run(url, lambda b: b.dead_letters(topic, group, limit))
    if not letters:
        out_console.print("no dead letters")
        return
    table = Table("id", "topic", "group", "attempts", "failed", "error")
    for letter in letters:
        error = letter.error if len(letter.error) <= 80 else letter.error[:79] + "…"
        table.add_row(
            letter.id,
            escape(letter.message.topic),
            escape(letter.group),
            str(letter.attempts),
            _when(letter),
            escape(error),
        )
    out_console.print(table)


@app.command()
def show(
    dead_letter_id: IdArgument, broker: BrokerOption = None, config: ConfigOption = None
) -> None:
    """Show one dead letter: its error, attempts and the whole message envelope."""
    url = _broker(broker, config)
    letter = _run(url, lambda b: b.dead_letter(dead_letter_id))
    out_console.print(f"dead letter {letter.id}", markup=False)
    out_console.print(f"group:    {letter.group}", markup=False)
    out_console.print(f"topic:    {letter.message.topic}", markup=False)
    out_console.print(f"attempts: {letter.attempts}", markup=False)
    out_console.print(f"failed:   {_when(letter)}", markup=False)
    out_console.print(f"error:    {letter.error}", markup=False)
    out_console.print(
        json.dumps(letter.message.to_wire(), indent=2, ensure_ascii=False), markup=False
    )


@app.command()
def replay(
    dead_letter_id: IdArgument, broker: BrokerOption = None, config: ConfigOption = None
) -> None:
    """Deliver a dead letter to its group again (attempt 1) and remove it."""
    url = _broker(broker, config)

    async def action(b: Broker) -> tuple[DeadLetter, str]:
        letter = await b.dead_letter(dead_letter_id)
        message = await b.replay(dead_letter_id)
        return letter, message.id

    letter, message_id = _run(url, action)
    out_console.print(
        f"Replayed {letter.id}: message {message_id} ({letter.message.topic}) goes to group "
        f"{letter.group} again.",
        markup=False,
    )


@app.command()
def purge(
    topic: TopicOption = None,
    group: GroupOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    broker: BrokerOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete dead letters for good (all, or those of a topic and/or group)."""
    url = _broker(broker, config)
    which = " and ".join(
        part for part in (topic and f"topic {topic}", group and f"group {group}") if part
    )
    scope = f"the dead letters of {which}" if which else "ALL dead letters"
    if not yes and not typer.confirm(f"Delete {scope}?", default=False):
        out_console.print("nothing deleted")
        raise typer.Exit(1)
    count = _run(url, lambda b: b.purge(topic, group))
    out_console.print(f"Purged {count} dead letter{'s' if count != 1 else ''}.")
