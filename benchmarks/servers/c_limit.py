"""Reference (d): the C fan-out of ``c_limit.c``, built on demand and run in place of Python.

:func:`build` compiles ``benchmarks/servers/c_limit.c`` with ``cc -O2`` (or ``$CC``, or
``gcc``, or ``clang``) into a cache folder, once per version of the source; with no
compiler it raises :class:`Unavailable`, which the harness reports as a skipped figure,
never as a failure (:func:`unavailable`).

Run by the harness as ``python -m benchmarks.servers.c_limit``: it builds (or finds the
cached binary) and replaces itself with it (``os.execv``), so the process the harness
started, watches in ``/proc`` and ends by its PID is the C server itself, with the same
stdin and stdout (the control protocol of :mod:`benchmarks.servers.control`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from benchmarks.messages import REFERENCE_THING_ID

__all__ = ["COMPILERS", "SOURCE", "Unavailable", "build", "cache_dir", "unavailable"]

SOURCE: Final = Path(__file__).with_name("c_limit.c")
#: Tried in order when ``$CC`` is not set.
COMPILERS: Final = ("cc", "gcc", "clang")
FLAGS: Final = ("-O2", "-Wall", "-o")


class Unavailable(RuntimeError):
    """The C reference cannot be built here (no compiler, or it failed)."""


def cache_dir() -> Path:
    """Where built binaries are kept: ``$XDG_CACHE_HOME/trio-things-bench`` (or
    ``~/.cache/...``), or the temporary folder when neither is writable."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    for folder in (Path(base) / "trio-things-bench",
                   Path(tempfile.gettempdir()) / f"trio-things-bench-{os.getuid()}"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise Unavailable("no writable cache folder for the C reference's binary")


def _compiler(compilers: Sequence[str] | None) -> str:
    names = list(compilers) if compilers is not None else (
        [os.environ["CC"]] if os.environ.get("CC") else list(COMPILERS))
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise Unavailable(f"no C compiler found (tried {', '.join(names)})")


def build(*, cache: Path | None = None, compilers: Sequence[str] | None = None) -> Path:
    """The path of the built server, compiling it first unless this version of the source
    is built already. Raises :class:`Unavailable` when it cannot be built."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join(FLAGS).encode()).hexdigest()[:12]
    folder = cache_dir() if cache is None else cache
    binary = folder / f"c_limit-{digest}"
    if binary.exists() and os.access(binary, os.X_OK):
        return binary
    compiler = _compiler(compilers)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{binary.name}.{os.getpid()}"  # renamed into place: atomic
    try:
        result = subprocess.run([compiler, *FLAGS, str(partial), str(SOURCE)],
                                capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise Unavailable(f"{Path(compiler).name} failed on {SOURCE.name}: "
                              + " / ".join(tail))
        partial.replace(binary)
        for stale in folder.glob("c_limit-*"):  # builds of earlier versions of the source
            if stale != binary:
                stale.unlink(missing_ok=True)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Unavailable(f"could not build {SOURCE.name}: {error}") from None
    finally:
        partial.unlink(missing_ok=True)
    return binary


def unavailable() -> str | None:
    """Why the C reference cannot run here (built now if need be), or ``None``."""
    try:
        build()
    except Unavailable as reason:
        return str(reason)
    return None


def main() -> None:
    try:
        binary = build()
    except Unavailable as reason:
        print(f"c_limit: {reason}", file=sys.stderr)
        raise SystemExit(3) from None
    sys.stdout.flush()
    os.execv(binary, [str(binary), REFERENCE_THING_ID])


if __name__ == "__main__":
    main()
