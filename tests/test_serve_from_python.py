""""Serve from Python" (docs/quickstart.md) as a user's script runs it: a real process
on a loopback port, stopped with Ctrl-C."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import logging
import signal
import sys

# Ctrl-C as in a terminal: a process started in the background (a CI job, say) may
# inherit SIGINT ignored, and then Python raises no KeyboardInterrupt at all.
signal.signal(signal.SIGINT, signal.default_int_handler)

import trio
import trio_things as tt
from trio_things.demo import Counter

server = tt.ThingServer(tt.ServerConfig(port=0))
server.add_thing("counter", Counter())
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s", force=True)
print("starting", flush=True)
{run}
print("stopped", flush=True)
"""


def interrupted(tmp_path: Path, run: str, signum: signal.Signals) -> tuple[int, str, str]:
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT.format(run=run))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline() == "starting\n"
        listening = process.stdout.readline()  # the server's log line, once it listens
        assert listening.startswith("listening on http://127.0.0.1:"), listening
        port = int(listening.rsplit(":", 1)[1].strip(" /\n"))
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
        process.send_signal(signum)
        out, err = process.communicate(timeout=20)
        return process.returncode, out, err
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_run_serves_until_ctrl_c_and_returns(tmp_path: Path, signum: signal.Signals) -> None:
    status, out, err = interrupted(tmp_path, "server.run()", signum)
    assert status == 0
    assert out.endswith("stopped\n")  # run() returned: the script goes on
    assert err == ""


def test_ctrl_c_in_trio_run_serve_is_one_keyboard_interrupt(tmp_path: Path) -> None:
    """``trio.run(server.serve)`` once ended a Ctrl-C with ~50 lines of nested exception
    groups; now a plain KeyboardInterrupt, whose traceback is a few lines."""
    status, out, err = interrupted(tmp_path, "trio.run(server.serve)", signal.SIGINT)
    assert status != 0
    assert "stopped" not in out
    lines = err.strip().splitlines()
    assert lines[-1] == "KeyboardInterrupt"
    assert "ExceptionGroup" not in err
    assert len(lines) < 15, err
