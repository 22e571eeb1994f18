"""A process killed (SIGKILL) while it saves settings leaves the old file or the new one,
whole: never torn, never empty, never missing, and the next load works.

Two ways of killing, each in child processes that run the real
:func:`~trio_things.runtime.settings.save_atomically`:

* deterministic: the child kills itself from the save's ``step`` hook, at one point of
  the protocol (:data:`~trio_things.runtime.settings.SAVE_STEPS`) per child, so every
  point is covered on every run, and what the file holds after each is known exactly;
* at random moments: a child saves two large contents in turn, in a tight loop, and
  prints a line after each save; the parent kills it after reading ``k`` lines, for
  many ``k``. The kill lands wherever the child happens to be in its next save.

SIGKILL leaves the kernel's page cache intact, so these tests show that no moment of
the protocol exposes a torn file to the next start; that the data also survives a
power cut rests on the ``fsync`` calls, which no test in a running system can check.
"""

from __future__ import annotations

import logging
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import trio_things as tt
from trio_things.runtime.settings import SAVE_STEPS, SettingsStore, encode_settings

#: Seconds: what one child may take before it is a hang (never reached when all is well).
TIMEOUT = 20


class Big(tt.Thing):
    """Settings large enough that a save takes more than one write of the kernel's."""

    text: str = tt.setting(default="")
    number: int = tt.setting(default=0)


OLD = {"number": 1, "text": "old " * 100_000}
NEW = {"number": 2, "text": "new! " * 150_000}
OLD_BYTES, NEW_BYTES = encode_settings(OLD), encode_settings(NEW)

#: Kills itself at the step named by argv[3] while saving argv[2]'s bytes to argv[1].
KILL_AT_STEP = """
import os, signal, sys
from pathlib import Path
from trio_things.runtime.settings import save_atomically

def step(name):
    if name == sys.argv[3]:
        os.kill(os.getpid(), signal.SIGKILL)

save_atomically(Path(sys.argv[1]), Path(sys.argv[2]).read_bytes(), step=step)
"""

#: Saves argv[2]'s bytes and argv[3]'s to argv[1] in turn, a line on stdout after each.
SAVE_IN_A_LOOP = """
import sys
from pathlib import Path
from trio_things.runtime.settings import save_atomically

path = Path(sys.argv[1])
contents = [Path(sys.argv[2]).read_bytes(), Path(sys.argv[3]).read_bytes()]
saves = 0
while True:
    save_atomically(path, contents[saves % 2])
    saves += 1
    sys.stdout.write(f"{saves}\\n")
    sys.stdout.flush()
"""


@pytest.fixture
def contents(tmp_path: Path) -> tuple[Path, Path]:
    """The two contents, in files outside the settings folder."""
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    old.write_bytes(OLD_BYTES)
    new.write_bytes(NEW_BYTES)
    return old, new


def temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob(".big.json.*.tmp"))


async def check_after_the_kill(folder: Path, caplog: pytest.LogCaptureFixture) -> bytes:
    """The file is one of the two contents, whole; a load takes it without complaint and
    removes the temporary file the kill may have left. Returns the file's bytes."""
    raw = (folder / "big.json").read_bytes()
    assert raw in (OLD_BYTES, NEW_BYTES), f"torn: {len(raw)} bytes"
    big = Big()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trio_things.runtime.settings"):
        await SettingsStore("big", big, folder).load()
    assert caplog.records == []
    assert {"number": big.number, "text": big.text} == (OLD if raw == OLD_BYTES else NEW)
    assert temporaries(folder) == []
    assert (folder / "big.json").read_bytes() == raw  # a load never rewrites a good file
    return raw


@pytest.mark.parametrize("point", SAVE_STEPS)
async def test_a_kill_at_each_step_of_the_save(
        tmp_path: Path, contents: tuple[Path, Path], point: str,
        caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "settings"
    folder.mkdir()
    (folder / "big.json").write_bytes(OLD_BYTES)
    with trio.fail_after(TIMEOUT):
        child = await trio.run_process(
            [sys.executable, "-c", KILL_AT_STEP, str(folder / "big.json"),
             str(contents[1]), point], check=False)
    assert child.returncode == -signal.SIGKILL
    left = temporaries(folder)
    if point in ("created", "partial", "written", "synced"):  # killed mid-protocol
        [temporary] = left
        written = {"created": 0, "partial": len(NEW_BYTES) // 2}.get(point, len(NEW_BYTES))
        assert temporary.stat().st_size == written
    else:
        assert left == []
    renamed = SAVE_STEPS.index(point) >= SAVE_STEPS.index("replaced")
    assert await check_after_the_kill(folder, caplog) == (NEW_BYTES if renamed else OLD_BYTES)


#: After how many saves each loop is killed: the first few, then 13 spread at random
#: (seeded: the same counts on every run; where in its next save each kill lands is
#: up to the scheduler).
KILL_AFTER = [1, 2, 3, 4, 5, 7, 10, *random.Random(13).sample(range(11, 120), 13)]


async def test_kills_at_random_moments_of_a_busy_saver(
        tmp_path: Path, contents: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "settings"
    folder.mkdir()
    (folder / "big.json").write_bytes(OLD_BYTES)
    seen: set[bytes] = set()
    for k in KILL_AFTER:
        with trio.fail_after(TIMEOUT):
            process = await trio.lowlevel.open_process(
                [sys.executable, "-c", SAVE_IN_A_LOOP, str(folder / "big.json"),
                 str(contents[0]), str(contents[1])], stdout=subprocess.PIPE)
            assert process.stdout is not None
            lines = 0
            try:
                while lines < k:
                    chunk = await process.stdout.receive_some()
                    assert chunk, f"the saver ended after {lines} saves"
                    lines += chunk.count(b"\n")
            finally:
                process.kill()  # SIGKILL, wherever the child is in its next save
                await process.wait()
                await process.stdout.aclose()
        assert process.returncode == -signal.SIGKILL
        seen.add(await check_after_the_kill(folder, caplog))
    assert seen == {OLD_BYTES, NEW_BYTES}  # the kills did land on both sides
