""""Serve from Python" (docs/quickstart.md) as a user's script runs it: a real process
on a loopback port, stopped with Ctrl-C."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO

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


def _listening_line(stdout: IO[str]) -> str:
    """The server's "listening on" log line, past the lines it logs before (the open-file
    limit raised, say); "" if the process ends first."""
    while line := stdout.readline():
        if line.startswith("listening on "):
            return line
    return ""


def interrupted(tmp_path: Path, run: str, signum: signal.Signals) -> tuple[int, str, str]:
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT.format(run=run))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline() == "starting\n"
        listening = _listening_line(process.stdout)  # once it listens
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


STUCK_SCRIPT = """
import logging
import sys
import threading

import trio_things as tt

class Stuck(tt.Thing):
    @tt.action
    def hang(self) -> None:
        print("hang: started", flush=True)
        threading.Event().wait(600)  # never checks for cancellation

server = tt.ThingServer(tt.ServerConfig(port=0))
server.add_thing("stuck", Stuck())
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s", force=True)
server.run()
print("stopped", flush=True)
"""


def test_a_second_ctrl_c_ends_run_at_once_while_an_action_holds_the_shutdown(
        tmp_path: Path) -> None:
    """``run()`` waits for the running action after the first Ctrl-C; the second exits
    the process at once (status 130), with one line saying it did not wait."""
    script = tmp_path / "stuck.py"
    script.write_text(STUCK_SCRIPT)
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stderr is not None
        listening = _listening_line(process.stdout)
        assert listening.startswith("listening on http://127.0.0.1:"), listening
        port = int(listening.rsplit(":", 1)[1].strip(" /\n"))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("POST", "/stuck/hang", body=b"",
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            assert response.status == 201
            assert process.stdout.readline() == "hang: started\n"
            process.send_signal(signal.SIGINT)
            # The shutdown has begun once it closes this kept-alive connection.
            assert connection.sock is not None
            assert connection.sock.recv(1) == b""
        finally:
            connection.close()
        process.send_signal(signal.SIGINT)  # the action still holds the shutdown
        assert process.wait(timeout=10) == 130
        assert "stopped" not in process.stdout.read()
        err = process.stderr.read()
        assert err.splitlines()[-1].startswith(
            "trio-things: SIGINT again: exiting at once, without waiting"), err
        assert "Traceback" not in err
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
