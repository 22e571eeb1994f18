"""``trio-things``: the command line.

``trio-things serve [CONFIG] [--host HOST] [--port PORT] [--app-dir DIR]`` serves the
Things in CONFIG (TOML or LabThings JSON), or the built-in demo Things without one. The
classes it names are imported with ``--app-dir`` (the current directory by default) first
on the Python path, as ``python -m`` and uvicorn do, so a ``devices.py`` beside the
config is found without installing anything. Ctrl-C (SIGINT) or
SIGTERM shuts down cleanly: connections, then actions, then the Things themselves; a
second one while that waits (for a worker-thread action that never checks for
cancellation, say) exits at once, without waiting.
Exit status: 0 after a clean shutdown, 2 for a bad command line or configuration (one
line on stderr naming the cause, never a traceback), 1 if the server failed, 130 (143
for SIGTERM) when a second signal cut the shutdown short.

The client commands consume any Thing from the URL of its Thing Description
(:mod:`trio_things.client.command_line` has the details)::

    trio-things td URL
    trio-things read URL [PROPERTY ...] [--json]
    trio-things write URL PROPERTY VALUE [--json]
    trio-things invoke URL ACTION [KEY=VALUE ...] [--json] [--reconnect-for SECONDS]
    trio-things observe URL PROPERTY... [--json] [--count N] [--reconnect-for SECONDS]
    trio-things subscribe URL EVENT... [--json] [--count N] [--reconnect-for SECONDS]

Their exit status: 0 done; 1 the server or the action failed; 2 usage (a bad command
line, an unknown name, an invalid value, a read-only property); 3 the server is
unreachable, the connection was lost, or it did not answer in time; 130 interrupted
by Ctrl-C.

``trio-things discover [--seconds N] [--interface ADDR]`` browses the local network
(DNS-SD) for WoT servers and prints each with its Things
(:mod:`trio_things.client.discover`); it exits 0 even when it finds none.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar, cast

import attrs
import trio

from trio_things.client import command_line, discover
from trio_things.config import DEMO_THINGS, ConfigError, ServerConfig, load_config
from trio_things.server import ThingServer

__all__ = ["main"]

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-things", description="Serve and consume W3C Web of Things devices on Trio.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve Things over HTTP")
    serve.add_argument("config", nargs="?", type=Path,
                       help="a TOML or LabThings JSON config (default: the demo Things)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000; 0: any)")
    serve.add_argument("--app-dir", type=Path, default=Path("."),
                       help="folder put first on the Python path, for the Thing classes "
                            "the config names (default: the current directory)")
    serve.add_argument("--log-level", default="INFO",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    command_line.add_commands(commands)
    discover.add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "discover":
        return discover.run(args)
    if args.command != "serve":
        return command_line.run(args)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    app_dir = str(args.app_dir.resolve())
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        config = load_config(args.config) if args.config else ServerConfig(things=DEMO_THINGS)
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        config = attrs.evolve(config, access=config.access.with_tokens_from(os.environ),
                              **overrides)
        server = ThingServer(config)
        server.add_configured_things()
    except (ConfigError, ValueError, TypeError) as error:
        print(f"trio-things: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not server.things:
        print("trio-things: error: the configuration names no Things", file=sys.stderr)
        return EXIT_USAGE
    status = 0
    try:
        trio.run(_serve, server)
    except* ConfigError as group:  # found once serving began (the settings folder)
        print(f"trio-things: error: {_first_leaf(group)}", file=sys.stderr)
        status = EXIT_USAGE
    except* OSError as group:  # nurseries wrap it: open_tcp_listeners runs inside serve()
        cause = _first_leaf(group)
        print(f"trio-things: error: cannot listen on {config.host}:{config.port}: "
              f"{cause.strerror or cause}", file=sys.stderr)
        status = 1
    return status


E = TypeVar("E", bound=BaseException)


def _first_leaf(group: BaseExceptionGroup[E]) -> E:
    """The first exception of ``group`` that is no group (``except*`` says its type)."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return cast(E, leaf)


async def _serve(server: ThingServer) -> None:
    def stopping(received: signal.Signals) -> None:
        print(f"trio-things: {received.name}: shutting down (Ctrl-C again to exit at once)",
              file=sys.stderr)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(server.serve_until_signal,
                                                          on_signal=stopping))
        _print_urls(server, listeners)


def _print_urls(server: ThingServer, listeners: list[trio.SocketListener]) -> None:
    host, port = listeners[0].socket.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    root = f"{server.scheme}://{host}:{port}/"
    print(f"trio-things: serving {len(server.things)} Thing(s) at {root}", flush=True)
    for name in server.things:
        print(f"  {name:<16} {root}{name}/", flush=True)


if __name__ == "__main__":
    sys.exit(main())
