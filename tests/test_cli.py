"""``trio-things`` as a user runs it: real processes, real loopback sockets, port 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

COMMAND = [sys.executable, "-m", "trio_things.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`trio-things serve --port 0` with the demo Things; yields (process, root URL).
    Run in ``tmp_path``: the camera's setting is kept in a folder beside it."""
    process = subprocess.Popen([*COMMAND, "serve", "--port", "0"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # blocks until the server listens (or dies)
        assert first.startswith("trio-things: serving 3 Thing(s) at http://127.0.0.1:"), first
        root = first.rsplit(" ", 1)[1].strip()
        lines = [process.stdout.readline().split() for _ in range(3)]
        assert lines == [["thermometer", f"{root}thermometer/"], ["counter", f"{root}counter/"],
                         ["camera", f"{root}camera/"]]
        yield process, root
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_serve_answers_http_and_stops_on_ctrl_c(
        served: tuple[subprocess.Popen[str], str]) -> None:
    process, root = served
    with urllib.request.urlopen(f"{root}thermometer/", timeout=10) as response:
        td = orjson.loads(response.read())
    assert td["title"] == "Thermometer"
    assert td["base"] == root
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 0
    # Measured, not asserted as a speed: a generous bound only catches a hang.
    assert time.monotonic() - started < 5
    assert process.stderr is not None
    assert "Traceback" not in process.stderr.read()


def test_sigterm_also_shuts_down_cleanly(served: tuple[subprocess.Popen[str], str]) -> None:
    process, _ = served
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0


@pytest.mark.parametrize(("config", "message"), [
    ("[things.x]\nclass = 'nosuchmodule:Thing'\n",
     "thing 'x': no module 'nosuchmodule' on the Python path"),
    ("[things\n", "not valid TOML"),
    ("[server.tls]\ncertificate = 'missing.pem'\nkey = 'missing.key'\n"
     "[things.c]\nclass = 'trio_things.demo:Counter'\n",
     "[server.tls]: cannot read the certificate"),
    ("", "names no Things"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, config: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config)
    result = run("serve", str(path))
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_usage_error_exit_2() -> None:
    result = run("frobnicate")
    assert result.returncode == 2


def test_port_in_use_exits_1(served: tuple[subprocess.Popen[str], str]) -> None:
    _, root = served
    port = root.rsplit(":", 1)[1].strip("/")
    result = run("serve", "--port", port)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "trio-things"
    assert script.exists()
    assert os.access(script, os.X_OK)


def test_tokens_from_the_environment_are_required() -> None:
    """TRIO_THINGS_TOKENS turns authentication on: a request without the token is 401."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trio_things.cli", "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=os.environ | {"TRIO_THINGS_TOKENS": "env-token-123", "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", process.stdout.readline())
        assert match is not None
        url = f"http://127.0.0.1:{match.group(1)}/counter/count"
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=5)
        assert info.value.code == 401
        authorized = urllib.request.Request(url, headers={"Authorization": "Bearer env-token-123"})
        with urllib.request.urlopen(authorized, timeout=5) as response:
            assert response.read() == b"0"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0


def test_help_lists_the_client_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "td", "read", "write", "invoke", "observe", "subscribe"):
        assert command in result.stdout


DEVICES = '''
import trio_things as tt

class Lamp(tt.Thing):
    """A lamp."""
    on: bool = tt.property(default=False)
'''


@pytest.mark.parametrize("where", ["working directory", "--app-dir"])
def test_serve_finds_the_users_module_without_installing_it(tmp_path: Path, where: str) -> None:
    """The README's first example: a ``devices.py`` beside ``things.toml``, served by the
    installed console script (which, unlike ``python -m``, does not put the working
    directory on the path by itself)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "devices.py").write_text(DEVICES)
    (project / "things.toml").write_text('[things.lamp]\nclass = "devices:Lamp"\n')
    script = Path(sys.executable).parent / "trio-things"
    args = [str(script), "serve", str(project / "things.toml"), "--port", "0"]
    cwd = project
    if where == "--app-dir":
        args += ["--app-dir", str(project)]
        cwd = tmp_path
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("trio-things: serving 1 Thing(s) at http://127.0.0.1:"), (
            first, process.stderr.read() if process.poll() is not None and process.stderr
            else "")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


STUCK = '''
import threading

import trio_things as tt

class Stuck(tt.Thing):
    """A Thing whose action blocks its worker thread and never checks for cancellation."""

    @tt.action
    def hang(self) -> None:
        print("hang: started", flush=True)
        threading.Event().wait(600)
'''


def test_a_second_ctrl_c_exits_at_once_while_an_action_holds_the_shutdown(
        tmp_path: Path) -> None:
    """The first Ctrl-C waits for the running action, which never lets go; the second
    ends the process at once, status 130, saying that it did not wait."""
    (tmp_path / "stuck.py").write_text(STUCK)
    (tmp_path / "things.toml").write_text('[things.stuck]\nclass = "stuck:Stuck"\n')
    process = subprocess.Popen(
        [*COMMAND, "serve", str(tmp_path / "things.toml"), "--port", "0",
         "--app-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        assert first.startswith("trio-things: serving 1 Thing(s) at http://127.0.0.1:"), first
        root = first.rsplit(" ", 1)[1].strip()
        assert process.stdout.readline().split() == ["stuck", f"{root}stuck/"]
        invoke = urllib.request.Request(f"{root}stuck/hang", data=b"", method="POST",
                                        headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(invoke, timeout=10) as response:
            assert response.status == 201
        assert process.stdout.readline() == "hang: started\n"  # the thread is blocked now

        process.send_signal(signal.SIGINT)
        while "SIGINT: shutting down" not in (line := process.stderr.readline()):
            assert line, "the server ended or closed stderr before shutting down"
        process.send_signal(signal.SIGINT)  # the action still holds the shutdown
        assert process.wait(timeout=10) == 130
        rest = process.stderr.read()
        assert rest.splitlines()[-1].startswith(
            "trio-things: SIGINT again: exiting at once, without waiting"), rest
        assert "Traceback" not in rest
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
