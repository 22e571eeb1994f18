"""Settings that survive a restart: one JSON file per Thing, saved atomically.

A *setting* (``tt.setting``) is a data property the server keeps on disk, in
``<settings_folder>/<thing name>.json``: a flat JSON object of setting name to value,
indented and sorted, in UTF-8. :class:`SettingsStore` is one Thing's:

* **Load**, before the server enters the Thing (:meth:`SettingsStore.load`): each stored
  value is validated against its setting's schema and stored as a client's write would
  be, while the Thing is still silent (no notifier yet), so ``__aenter__`` sees it. A
  value that no longer validates, a name that is no setting, or a file that is not a
  JSON object is logged (one line each, naming the file and the field), the default is
  used, and the file is kept aside as ``<thing>.json.rejected-<UTC time>`` before
  anything is written over it; the valid fields of a partly bad file still load.
* **Migration** from LabThings-FastAPI, which keeps a Thing's settings in
  ``<settings_folder>/<thing name>/Settings-<ClassName>.json``: when our file does not
  exist and that one does, it is read once, loaded the same way, and our file is
  written. The LabThings file is never written to.
* **Save** (:meth:`SettingsStore.run`, a task in the server's nursery): a change marks
  the store dirty and wakes the writer, which takes a snapshot of every setting on the
  Trio thread and writes it in a worker thread; changes made during a write cause one
  more write after it, so a burst of changes costs a write or two and the last value
  always reaches the disk. :meth:`SettingsStore.flush` saves what is pending at
  shutdown. A snapshot equal to what the file holds is not written: a Thing whose
  settings never changed writes no file.
* **Atomic** (:func:`save_atomically`): a temporary file beside the real one is written,
  ``fsync``-ed and renamed over it, then the folder is ``fsync``-ed, so a crash at any
  moment leaves the old file or the new one, never a torn or empty one. Temporary
  files a crash left behind are removed at the next load.

Disk I/O always runs in a worker thread (:func:`trio.to_thread.run_sync`); the Thing is
read and written only on the Trio thread.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import trio

from trio_things.errors import InvalidValue
from trio_things.model.affordances import PropertySpec
from trio_things.model.thing import Thing

__all__ = [
    "SAVE_STEPS",
    "SHUTDOWN_FLUSH_TIMEOUT",
    "SettingsStore",
    "encode_settings",
    "labthings_settings_path",
    "save_atomically",
    "settings_of",
]

logger = logging.getLogger(__name__)

#: Seconds a shutdown waits for pending settings to reach the disk before it gives up
#: (logging an error); with nothing pending it does no I/O and waits for nothing.
SHUTDOWN_FLUSH_TIMEOUT: Final = 5.0

#: The points of :func:`save_atomically` at which its ``step`` hook is called, in order:
#: nothing done yet; the temporary file created, empty; half the data written to it;
#: all written, not yet synced; synced, not yet renamed; renamed over the old file, the
#: folder not yet synced; done.
SAVE_STEPS: Final = ("begin", "created", "partial", "written", "synced", "replaced", "done")

_TEMPORARY_SUFFIX: Final = ".tmp"


def settings_of(thing: Thing) -> dict[str, PropertySpec]:
    """The specs of ``thing``'s settings, by name (empty: nothing to keep)."""
    return {name: spec for name, spec in type(thing).affordances.properties.items()
            if spec.setting}


def labthings_settings_path(folder: Path, name: str, thing: Thing) -> Path:
    """Where LabThings-FastAPI keeps the settings of ``thing``, served as ``name``."""
    return folder / name / f"Settings-{type(thing).__name__}.json"


def encode_settings(values: Mapping[str, Any]) -> bytes:
    """A settings file's bytes: ``values`` as a JSON object, indented by 2, sorted, UTF-8."""
    try:
        text = json.dumps(values, indent=2, sort_keys=True, ensure_ascii=False)
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate: only an escape can carry it
        return json.dumps(values, indent=2, sort_keys=True).encode("ascii") + b"\n"


def save_atomically(path: Path, data: bytes, *,
                    step: Callable[[str], object] | None = None) -> None:
    """Replace the file ``path`` by one holding ``data``, so that a crash at any moment
    leaves either the old file or the new one. Blocking: call it from a worker thread.

    A temporary file in the same folder (``.<name>.<random>.tmp``) is written and
    ``fsync``-ed, then renamed over ``path`` (:func:`os.replace`, atomic), then the
    folder is ``fsync``-ed so that the rename itself survives a power cut. On an error
    the temporary file is removed and the error raised. ``step`` (for tests) is called
    with each name of :data:`SAVE_STEPS` as the save reaches it.
    """
    hook = step or _no_step
    folder = path.parent
    hook("begin")
    while True:
        temporary = folder / f".{path.name}.{secrets.token_hex(6)}{_TEMPORARY_SUFFIX}"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         0o644)
            break
        except FileExistsError:
            continue
    try:
        try:
            hook("created")
            half = len(data) // 2
            _write_all(fd, data[:half])
            hook("partial")
            _write_all(fd, data[half:])
            hook("written")
            os.fsync(fd)
            hook("synced")
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    hook("replaced")
    _fsync_folder(folder)
    hook("done")


def _no_step(name: str) -> None:
    pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files a save of ``path`` left when the process died."""
    prefix = f".{path.name}."
    for entry in path.parent.iterdir():
        if entry.name.startswith(prefix) and entry.name.endswith(_TEMPORARY_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


def _keep_aside(path: Path) -> Path:
    """Rename ``path`` to ``<name>.rejected-<UTC time>`` (never over another file)."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.rejected-{stamp}")
    number = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.rejected-{stamp}-{number}")
        number += 1
    path.rename(aside)
    return aside


class SettingsStore:
    """The settings of one Thing (served as ``name``), kept in ``<folder>/<name>.json``.

    Lifecycle, as :class:`~trio_things.server.ThingServer` drives it: :meth:`load`
    before the Thing is entered; :meth:`run` in the server's nursery while it serves,
    with :meth:`changed` called (on the Trio thread) whenever a setting changes;
    :meth:`flush` on the way out. ``save`` writes a file (:func:`save_atomically`; in a
    worker thread); :attr:`writes` counts the files written.
    """

    def __init__(self, name: str, thing: Thing, folder: Path, *,
                 save: Callable[[Path, bytes], object] = save_atomically) -> None:
        self.name = name
        self.thing = thing
        self.folder = folder
        self.path = folder / f"{name}.json"
        self.specs = settings_of(thing)
        self.writes = 0
        """Files written so far (loads' migrations and rejections included)."""
        self._save = save
        # The bytes the file holds, as far as we know: a snapshot equal to them is not
        # written. After a load without a file, the defaults: unchanged, nothing is saved.
        self._on_disk: bytes | None = None
        self._dirty = False
        self._wake = trio.Event()
        self._clean = trio.Event()
        self._clean.set()
        self._writing = trio.Lock()
        self._gave_up = False  # a flush timed out, its write still under way

    # ------------------------------------------------------------------ load

    async def load(self) -> None:
        """Create the folder if missing, remove stale temporary files, and load the
        stored settings into the Thing (see the module's docstring). On the Trio thread,
        before the server installs the Thing's notifier. Raises :exc:`OSError` if the
        folder cannot be created or a file cannot be read or kept aside."""
        # The writer's first round looks for changes made before it runs (by the Thing's
        # __aenter__, with no notifier yet), and writes only if there are any.
        self.changed()
        found = await trio.to_thread.run_sync(self._read)
        if found is None:
            self._on_disk = encode_settings(self.snapshot())
            return
        source, raw, migrated = found
        problems = self._apply(raw)
        kept = ""
        if problems and not migrated:
            aside = await trio.to_thread.run_sync(_keep_aside, source)
            kept = f" (the file is kept as {aside.name})"
        elif problems:
            kept = " (the LabThings file is left as it is)"
        for problem in problems:
            logger.warning("settings of %r: %s: %s%s", self.name, source, problem, kept)
        if migrated or problems:
            # Our file is missing (never written, or just kept aside): write it now, so
            # that what loaded is on disk and a rejected file is never read again.
            data = encode_settings(self.snapshot())
            await trio.to_thread.run_sync(self._save, self.path, data)
            self.writes += 1
            self._on_disk = data
            if migrated:
                logger.info("settings of %r: migrated from the LabThings file %s to %s",
                            self.name, source, self.path)
        else:
            self._on_disk = encode_settings(self.snapshot())

    def _read(self) -> tuple[Path, bytes, bool] | None:
        """In a worker thread: ``(file, its bytes, whether it is LabThings')``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(self.path)
        try:
            return self.path, self.path.read_bytes(), False
        except FileNotFoundError:
            pass
        legacy = labthings_settings_path(self.folder, self.name, self.thing)
        try:
            return legacy, legacy.read_bytes(), True
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _apply(self, raw: bytes) -> list[str]:
        """Store each valid setting of the file's bytes in the Thing; return a line
        for each problem (the field and why)."""
        try:
            stored = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            return [f"not JSON ({error}); every setting takes its default"]
        if not isinstance(stored, dict):
            return [f"not a JSON object but {type(stored).__name__}; every setting takes "
                    "its default"]
        problems = []
        for key, value in stored.items():
            spec = self.specs.get(key)
            if spec is None:
                problems.append(f"field {key!r}: {type(self.thing).__name__} has no "
                                "setting of that name; ignored")
                continue
            try:
                structured = self.thing._tt_structure_json(spec, value)
            except InvalidValue as error:
                why = error.detail.removeprefix(f"{key}: ")
                problems.append(f"field {key!r}: {why}; the default is used")
                continue
            self.thing._tt_store_structured(spec, structured)
        return problems

    # ------------------------------------------------------------------ save

    def snapshot(self) -> dict[str, Any]:
        """Every setting's current value as JSON data. On the Trio thread."""
        return {name: self.thing._tt_read_json(spec) for name, spec in self.specs.items()}

    def changed(self, name: str | None = None) -> None:
        """A setting (``name``) changed: wake the writer. On the Trio thread; never
        blocks (a change made in a worker thread arrives through the Thing's notifier
        and :meth:`~trio_things.fanout.bridge.TrioBridge.call_soon`)."""
        self._dirty = True
        if self._clean.is_set():
            self._clean = trio.Event()
        self._wake.set()

    async def run(self) -> None:
        """The writer: save after each change, one write at a time; runs until
        cancelled. A write under way when it is cancelled completes first."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._dirty:
                self._dirty = False
                await self._save_if_changed(abandon_on_cancel=False)
            self._clean.set()

    async def wait_saved(self) -> None:
        """Wait until every change so far has been written (or failed to be)."""
        await self._clean.wait()

    async def flush(self, timeout: float = SHUTDOWN_FLUSH_TIMEOUT) -> None:  # noqa: ASYNC109
        """Write what is not on disk yet, shielded from cancellation and within
        ``timeout`` seconds (then an error is logged, and the write goes on in its
        thread, as long as the process lives). With nothing pending, returns at once."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(timeout) as bounded:
                self._dirty = False
                await self._save_if_changed(abandon_on_cancel=True)
                self._clean.set()
            if bounded.cancelled_caught:
                # The write goes on in its thread: a later one could land before it and
                # be replaced by it, older. So this store writes no more.
                self._gave_up = True
                logger.error("settings of %r: not saved to %s within %g s; the latest "
                             "changes may be lost", self.name, self.path, timeout)

    async def _save_if_changed(self, *, abandon_on_cancel: bool) -> None:
        async with self._writing:
            if self._gave_up:
                return
            try:
                data = encode_settings(self.snapshot())
            except Exception:
                logger.exception("settings of %r: cannot be read to be saved", self.name)
                return
            if data == self._on_disk:
                return
            try:
                await trio.to_thread.run_sync(self._save, self.path, data,
                                              abandon_on_cancel=abandon_on_cancel)
            except OSError as error:
                logger.error("settings of %r: cannot save to %s: %s; tried again at the "
                             "next change", self.name, self.path, error)
                return
            self._on_disk = data
            self.writes += 1
