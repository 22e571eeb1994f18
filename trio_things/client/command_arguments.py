"""The command line of the client's ``trio-things`` subcommands: the arguments each takes
(:func:`add_commands`) and how ``VALUE`` and ``KEY=VALUE`` arguments are read.

Apart from the commands themselves (:mod:`trio_things.client.command_line`, which
re-exports these names and documents the command line): this only declares and parses,
it runs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Final

from trio_things.client.options import ClientOptions
from trio_things.client.values import JsonValue
from trio_things.protocol.mqtt import PASSWORD_VARIABLE

__all__ = ["RECONNECT_FOR", "TOKEN_VARIABLE", "add_commands", "parse_arguments",
           "parse_value"]

TOKEN_VARIABLE: Final = "TRIO_THINGS_TOKEN"
#: How long ``invoke``, ``observe`` and ``subscribe`` try to reach a lost server.
RECONNECT_FOR: Final = 30.0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client subcommands to ``commands`` (argparse's subparsers action)."""

    def add(name: str, help: str, *, json_output: bool = True) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help)
        parser.add_argument("url", help="the URL of the Thing Description")
        parser.add_argument("--timeout", type=float, default=ClientOptions().timeout,
                            help="seconds any one network wait may take (default %(default)g)")
        parser.add_argument("--token", default=os.environ.get(TOKEN_VARIABLE),
                            help=f"a bearer token (default: ${TOKEN_VARIABLE})")
        parser.add_argument("--prefer", default="", metavar="BINDING[,BINDING...]",
                            help="bindings to use first where the TD offers several: "
                                 "http, websocket, mqtt (default: the TD's order)")
        parser.add_argument("--mqtt-user", metavar="NAME",
                            help="the user name for MQTT brokers (the password: "
                                 f"${PASSWORD_VARIABLE})")
        if json_output:
            parser.add_argument("--json", action="store_true",
                                help="print JSON lines instead of human-readable ones")
        return parser

    def reconnect(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--reconnect-for", type=float, default=RECONNECT_FOR,
                            metavar="SECONDS",
                            help="how long to keep trying to reach a server that was lost "
                                 "before giving up (default %(default)g; inf: forever)")

    add("td", "print a Thing's Description", json_output=False)
    add("read", "read properties (all of them without a name)").add_argument(
        "names", nargs="*", metavar="PROPERTY")
    write = add("write", "write a property")
    write.add_argument("property")
    write.add_argument("value", help="the value: JSON, or else taken as a string")
    invoke = add("invoke", "invoke an action and follow it until it ends")
    invoke.add_argument("action")
    invoke.add_argument("arguments", nargs="*", metavar="KEY=VALUE",
                        help="the action's arguments; each VALUE is JSON, or else a string")
    invoke.add_argument("--output", "-o", metavar="FILE",
                        help="save an output that is a blob (an image, a file) to FILE")
    reconnect(invoke)
    for name, what in (("observe", "property"), ("subscribe", "event")):
        parser = add(name, f"print each change of {what}s until Ctrl-C" if name == "observe"
                     else f"print each emission of {what}s until Ctrl-C")
        parser.add_argument("names", nargs="+", metavar=what.upper())
        parser.add_argument("--count", type=int, default=None,
                            help="stop after this many changes or events")
        reconnect(parser)


def parse_value(text: str) -> JsonValue:
    """A command-line value: JSON if it parses (``30``, ``true``, ``[1, 2]``,
    ``"x"``), else the text itself as a string (``precise``)."""
    try:
        value: JsonValue = json.loads(text)
    except ValueError:
        return text
    return value


def parse_arguments(pairs: list[str]) -> dict[str, JsonValue]:
    """``KEY=VALUE`` pairs as keyword arguments; ``ValueError`` naming a bad one."""
    arguments: dict[str, JsonValue] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise ValueError(f"argument {pair!r} is not KEY=VALUE")
        arguments[key] = parse_value(value)
    return arguments

