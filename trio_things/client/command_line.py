"""The client side of the ``trio-things`` command line: any Thing, from its TD URL.

::

    trio-things td URL                          the Thing Description, as JSON
    trio-things read URL [PROPERTY...]          temperature = 21.3 (no name: all)
    trio-things write URL PROPERTY VALUE        VALUE is JSON, or else a string
    trio-things invoke URL ACTION [KEY=VALUE...]  live status and log until it ends
    trio-things observe URL PROPERTY...         one line per change, until Ctrl-C
    trio-things subscribe URL EVENT...          one line per emission, until Ctrl-C

``--json`` prints JSON instead of the human-readable lines (``read``, ``write``,
``invoke``, ``observe``, ``subscribe``); ``invoke --output FILE`` saves an output that
is a blob (an image, a file: its link, ``{"href": ..., "media_type": ...}``) to FILE,
saying so on stderr (any other output is saved as JSON); without it, a blob output is
printed as its link, with a hint on stderr; ``--count N`` stops ``observe``/``subscribe``
after N changes or events; ``--timeout`` bounds every network wait;
``--reconnect-for`` bounds how long ``invoke``, ``observe`` and ``subscribe`` keep
trying to reach a server they lost (saying so on stderr) before they give up with
status 3; ``--token`` (or ``TRIO_THINGS_TOKEN``) is sent as a bearer token;
``--prefer mqtt`` (or ``http``, ``websocket``, several with commas) uses that binding
wherever the TD offers it, ``--mqtt-user NAME`` logs in to MQTT brokers with the
password in ``TRIO_THINGS_MQTT_PASSWORD``. Ctrl-C
during ``invoke`` asks whether to cancel the invocation on the server (on stderr, when
stdin is a terminal; without one, it is cancelled).

Once back, ``subscribe`` goes on from the last event it printed. Where the server no
longer held every event emitted meanwhile (or restarted), it prints one line in their
place, on stdout with the events, and goes on: ``EVENT: gap: events were missed:
DETAIL``, or with ``--json`` ``{"name": EVENT, "gap": {...}}`` (the problem details,
with ``lastEventID`` and ``resumeID``).

A URL that is not a Thing's (a server's root, a property's URL) or an ``https`` URL of
a plain-HTTP server ends with an error saying which URL (or command) to use instead.

Exit status:

===== ===================================================================
0     done (``observe``/``subscribe``: stopped by Ctrl-C or ``--count``)
1     the server or the action failed: an action that failed or was
      cancelled by someone else, a 5xx answer, an event stream that fell behind
2     usage: a bad command line, a URL that is no Thing's, a name the Thing
      does not have, a value or input the server refused, a read-only
      property, any other 4xx answer
3     unreachable: no connection, a lost one (that ``--reconnect-for`` did
      not get back), or no answer within ``--timeout``
130   interrupted by Ctrl-C (``invoke``: whether cancelled or left running)
===== ===================================================================

Errors are one line on stderr, ``trio-things: error: ...``, never a traceback; an
``invoke`` that lost its server names the invocation's URL, to ask for it later.

The arguments are declared and parsed in :mod:`trio_things.client.command_arguments`
(re-exported here); this module runs the commands.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Final

import attrs
import trio

from trio_things.client.actions import ActionStatus, Invocation, State
from trio_things.client.blobs import blob_link
from trio_things.client.command_arguments import RECONNECT_FOR, add_commands
from trio_things.client.command_arguments import TOKEN_VARIABLE as TOKEN_VARIABLE
from trio_things.client.command_arguments import parse_arguments as parse_arguments
from trio_things.client.command_arguments import parse_value as parse_value
from trio_things.client.connect import connect
from trio_things.client.errors import (
    ActionCancelled,
    ActionFailed,
    ClientError,
    ConnectionLost,
    FellBehind,
    InvalidValue,
    NotAThing,
    NotFound,
    NotificationsMissed,
    NotWritable,
    Timeout,
    UnsupportedOperation,
)
from trio_things.client.options import ClientOptions
from trio_things.client.things import ConsumedThing
from trio_things.client.values import JsonValue
from trio_things.protocol.mqtt import PASSWORD_VARIABLE

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_UNREACHABLE", "EXIT_USAGE",
           "add_commands", "exit_status", "run"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
#: 128 + SIGINT, as shells report a process ended by Ctrl-C.
EXIT_INTERRUPTED: Final = 130

Command = Callable[[argparse.Namespace, ConsumedThing, "_Interrupts"], Awaitable[int]]


def exit_status(error: ClientError) -> int:
    """The exit status an error ends the command with (see the module's table)."""
    if isinstance(error, ConnectionLost | Timeout):
        return EXIT_UNREACHABLE
    if isinstance(error, NotFound | NotWritable | InvalidValue | UnsupportedOperation):
        return EXIT_USAGE
    if isinstance(error, ActionFailed | ActionCancelled | FellBehind):
        return EXIT_FAILED
    status = error.status
    return EXIT_USAGE if status is not None and 400 <= status < 500 else EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    """Run one client command; return its exit status."""
    logging.basicConfig(level=logging.WARNING, format="trio-things: %(message)s")
    status: int = trio.run(_main, args)
    return status


def _error(message: str) -> None:
    print(f"trio-things: error: {message}", file=sys.stderr, flush=True)


class _Interrupts:
    """Ctrl-C, as Trio delivers it to a signal receiver: each press cancels the scopes
    opened with :meth:`cancelling` at that moment, instead of raising
    KeyboardInterrupt wherever the program happens to be."""

    def __init__(self) -> None:
        self.pressed = 0
        self._scopes: list[trio.CancelScope] = []

    async def watch(self, signals: AsyncIterator[int]) -> None:
        async for _ in signals:
            self.pressed += 1
            if self._scopes:
                self._scopes.pop().cancel()

    @contextmanager
    def cancelling(self) -> Iterator[trio.CancelScope]:
        """A cancel scope the next Ctrl-C cancels, if it is the innermost one open:
        each press cancels one scope, innermost first."""
        with trio.CancelScope() as scope:
            self._scopes.append(scope)
            try:
                yield scope
            finally:
                if scope in self._scopes:
                    self._scopes.remove(scope)


async def _main(args: argparse.Namespace) -> int:
    """The command, with Ctrl-C delivered as cancellation and every error reported as
    one line and an exit status."""
    interrupts = _Interrupts()
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(interrupts.watch, signals)
            try:
                return await _command(args, interrupts)
            except BaseExceptionGroup as group:  # from a nursery of the command's own
                error = _client_error(group)
                if error is None:
                    raise
                return _failed(args, error)
            except ClientError as error:
                return _failed(args, error)
            except ValueError as error:  # a malformed URL, KEY=VALUE or --timeout
                _error(str(error))
                return EXIT_USAGE
            finally:
                nursery.cancel_scope.cancel()


async def _command(args: argparse.Namespace, interrupts: _Interrupts) -> int:
    command: Command = _COMMANDS[args.command]
    args.parsed_arguments = (parse_arguments(args.arguments) if args.command == "invoke"
                             else {})
    if args.timeout <= 0:
        raise ValueError("--timeout must be positive")
    reconnect_for: float | None = getattr(args, "reconnect_for", RECONNECT_FOR)
    if reconnect_for is not None and not reconnect_for > 0:
        raise ValueError("--reconnect-for must be positive")
    if reconnect_for == math.inf:
        reconnect_for = None
    options = ClientOptions(
        timeout=args.timeout, reconnect_for=reconnect_for,
        prefer=tuple(name.strip() for name in args.prefer.split(",") if name.strip()),
        mqtt_username=args.mqtt_user,
        mqtt_password=os.environ.get(PASSWORD_VARIABLE) if args.mqtt_user else None)
    with interrupts.cancelling() as scope:
        async with connect(args.url, options=options, token=args.token) as thing:
            return await command(args, thing, interrupts)
    assert scope.cancelled_caught
    return EXIT_OK if args.command in ("observe", "subscribe") else EXIT_INTERRUPTED


def _client_error(group: BaseExceptionGroup[BaseException]) -> ClientError | None:
    """The first ClientError in ``group``, if that is all it holds (besides
    cancellations it caused)."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            leaves.append(error)
    errors = [e for e in leaves if not isinstance(e, trio.Cancelled)]
    if errors and all(isinstance(e, ClientError) for e in errors):
        first = errors[0]
        assert isinstance(first, ClientError)
        return first
    return None


def _failed(args: argparse.Namespace, error: ClientError) -> int:
    """Report ``error`` (with what to type instead, for a URL that is no Thing's)."""
    _error(f"{error}{_instead(args, error)}" if isinstance(error, NotAThing) else str(error))
    return exit_status(error)


def _instead(args: argparse.Namespace, error: NotAThing) -> str:
    """What to type instead of the command that was given a URL that is no Thing's."""
    if error.thing_url is None or error.name is None:
        return ""  # a server's root: the message lists its Things' URLs
    url, name = error.thing_url, error.name
    if args.command == "td":
        words = ["td", url]
    elif error.kind == "property" and args.command == "write":
        words = ["write", url, name, args.value]
    elif error.kind == "property":
        words = [args.command if args.command == "observe" else "read", url, name]
    elif error.kind == "action":
        words = ["invoke", url, name,
                 *(args.arguments if args.command == "invoke" else [])]
    else:
        words = ["subscribe", url, name]
    return "; try: trio-things " + shlex.join(words)


def _print(line: str) -> None:
    print(line, flush=True)


def _human(value: JsonValue) -> str:
    return json.dumps(value, ensure_ascii=False)


def _json(value: JsonValue) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


async def _td(args: argparse.Namespace, thing: ConsumedThing, interrupts: _Interrupts) -> int:
    _print(json.dumps(thing.td, indent=2, ensure_ascii=False))
    return EXIT_OK


async def _read(args: argparse.Namespace, thing: ConsumedThing, interrupts: _Interrupts) -> int:
    """Every name read before anything is printed: one line each, or one JSON object."""
    values: dict[str, JsonValue] = {}
    if args.names:
        for name in args.names:
            values[name] = await thing.read(name)
    else:
        values = await thing.read_all()
    _print_values(args, values)
    return EXIT_OK


async def _write(args: argparse.Namespace, thing: ConsumedThing, interrupts: _Interrupts
                 ) -> int:
    """Write, then say what was written (once the server accepted it)."""
    value = parse_value(args.value)
    await thing.write(args.property, value)
    _print_values(args, {args.property: value})
    return EXIT_OK


def _print_values(args: argparse.Namespace, values: dict[str, JsonValue]) -> None:
    if args.json:
        _print(_json(values))
        return
    for name, value in values.items():
        _print(f"{name} = {_human(value)}")


async def _observe(args: argparse.Namespace, thing: ConsumedThing, interrupts: _Interrupts
                   ) -> int:
    """Each name in its own task; all share the client's one WebSocket."""
    subscribe = args.command == "subscribe"
    for name in args.names:  # every name checked before anything is printed
        (thing.subscribe if subscribe else thing.observe)(name)
    remaining = [args.count]

    async def follow(name: str, nursery: trio.Nursery) -> None:
        observation = thing.subscribe(name) if subscribe else thing.observe(name)
        async with observation:
            changes = observation.changes()
            while True:
                try:
                    async for change in changes:
                        if args.json:
                            _print(_json({"name": change.name,
                                          "value" if not subscribe else "data": change.value,
                                          "timestamp": change.timestamp}))
                        else:
                            _print(f"{change.name}{': ' if subscribe else ' = '}"
                                   f"{_human(change.value)}")
                        if remaining[0] is not None:
                            remaining[0] -= 1
                            if remaining[0] <= 0:
                                nursery.cancel_scope.cancel()
                    return
                except NotificationsMissed as gap:  # a line where events are missing
                    _print_gap(args, gap)

    if args.count is not None and args.count <= 0:
        return EXIT_OK
    async with trio.open_nursery() as nursery:
        for name in args.names:
            nursery.start_soon(follow, name, nursery)
    return EXIT_OK


def _print_gap(args: argparse.Namespace, gap: NotificationsMissed) -> None:
    """One line where a subscription lost events (across a lost connection); not
    counted by ``--count``, which counts events."""
    if args.json:
        problem = gap.problem.to_json() if gap.problem is not None else {}
        _print(_json({"name": gap.name, "gap": problem | {
            "lastEventID": gap.last_event_id, "resumeID": gap.resume_id}}))
    else:
        detail = gap.problem.detail if gap.problem is not None else str(gap)
        _print(f"{gap.name}: gap: events were missed: {detail}")


async def _invoke(args: argparse.Namespace, thing: ConsumedThing, interrupts: _Interrupts
                  ) -> int:
    invocation = await thing.invoke(args.action, **args.parsed_arguments)
    progress = _Progress()
    with interrupts.cancelling() as watching:
        await _follow(invocation, args, progress)
    if not watching.cancelled_caught:
        if invocation.status.state is State.COMPLETED:
            return await _completed(args, thing, invocation.status.output)
        await invocation.result()  # raises ActionFailed or ActionCancelled
        return EXIT_FAILED  # pragma: no cover - result() raised
    return await _interrupted(invocation, args, interrupts, progress)


async def _completed(args: argparse.Namespace, thing: ConsumedThing, output: JsonValue
                     ) -> int:
    """Print the output (a blob's link absolute), and save it with ``--output``."""
    blob = thing.blob(output) if blob_link(output) is not None else None
    shown: JsonValue = output if blob is None else {"href": blob.href,
                                                     "media_type": blob.media_type}
    if not args.json:
        _print(f"{args.action} = {_human(shown)}")
    try:
        if blob is not None and args.output:
            size = await blob.save(args.output)
            _note(f"saved {size} bytes of {blob.media_type} to {args.output}")
        elif blob is not None:
            _note(f"the output is a blob ({blob.media_type}): save it with --output FILE, "
                  f"or download {blob.href} before the server forgets the invocation")
        elif args.output:
            text = json.dumps(output, ensure_ascii=False) + "\n"
            await trio.Path(args.output).write_text(text, encoding="utf-8")
            _note(f"saved the output, JSON, to {args.output}")
    except OSError as error:
        _error(f"cannot save the output to {args.output}: {error.strerror or error}")
        return EXIT_USAGE
    return EXIT_OK


def _note(message: str) -> None:
    print(f"trio-things: {message}", file=sys.stderr, flush=True)


@attrs.define
class _Progress:
    """What has been printed of an invocation, so following it again (after a
    cancellation) prints only what is new."""

    last: ActionStatus | None = None
    logged: int = 0


async def _follow(invocation: Invocation, args: argparse.Namespace,
                  progress: _Progress) -> None:
    """Print each status (and new log line) until the invocation ends."""
    async for status in invocation.updates():
        previous, progress.last = progress.last, status
        new_lines = status.log[progress.logged:]
        progress.logged = max(progress.logged, len(status.log))
        if args.json:
            if status != previous:
                data = status.to_json()
                data.pop("log", None)  # only the lines new since the previous JSON line
                if new_lines:
                    data["log"] = [line.to_json() for line in new_lines]
                _print(_json(data))
            continue
        changed = previous is None or status.state is not previous.state
        if changed and not status.state.ended:
            _print(f"{_label(status)}: {status.state.value}")
        for line in new_lines:  # the action's progress, as it logged it
            level = "" if line.level == "INFO" else f"{line.level}: "
            _print(f"{_label(status)}: {level}{line.message}")
        if changed and status.state.ended:
            _print(f"{_label(status)}: {status.state.value}")


def _label(status: ActionStatus) -> str:
    return f"{status.action} {status.id[:8]}" if status.id else status.action


async def _interrupted(invocation: Invocation, args: argparse.Namespace,
                       interrupts: _Interrupts, progress: _Progress) -> int:
    """Ctrl-C while following: ask (on a terminal) or cancel (without one)."""
    if invocation.status.state.ended:
        return EXIT_INTERRUPTED
    cancel = True
    if sys.stdin.isatty():
        cancel = False
        with interrupts.cancelling():  # a second Ctrl-C means: no, just leave
            print("\ncancel the invocation? [y/N] ", end="", file=sys.stderr, flush=True)
            answer = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            cancel = answer.strip().lower() in ("y", "yes")
    if not cancel:
        where = invocation.status.href or invocation.id
        print(f"trio-things: left running: {where}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    print(f"trio-things: cancelling {_label(invocation.status)}", file=sys.stderr, flush=True)
    with interrupts.cancelling():
        if await invocation.cancel():
            with trio.move_on_after(args.timeout):
                await _follow(invocation, args, progress)
    return EXIT_INTERRUPTED


_COMMANDS: Final[dict[str, Command]] = {
    "td": _td, "read": _read, "write": _write, "invoke": _invoke,
    "observe": _observe, "subscribe": _observe,
}
