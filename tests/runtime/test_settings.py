"""Settings that survive a restart (``trio_things.runtime.settings``): the round trip
through a server, coalesced writes, the shutdown flush, bad stored values, the
LabThings migration and the configuration. The crash tests are in
``test_settings_crash.py``."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_things as tt
from trio_things.config import ConfigError, ServerConfig, load_config
from trio_things.fanout.bridge import TrioBridge
from trio_things.fanout.history import History
from trio_things.fanout.notifier import ThingNotifier
from trio_things.fanout.observers import ObserverRegistry
from trio_things.runtime.settings import (
    SettingsStore,
    encode_settings,
    labthings_settings_path,
    save_atomically,
    settings_of,
)
from trio_things.server import ThingServer
from trio_things.testing import serve_in_memory

#: Seconds: what a test may take before it is a hang (never reached when all is well).
TIMEOUT = 30
LOGGER = "trio_things.runtime.settings"


class Camera(tt.Thing):
    """A camera with a few settings and a property that is none."""

    exposure: float = tt.setting(default=10.0, minimum=0.1, maximum=1000)
    gain: int = tt.setting(default=1, minimum=1, maximum=16)
    label: str = tt.setting(default="cam")
    level: int = tt.setting(default=0)
    serial: str = tt.setting(default="unknown", readonly=True)
    quiet: int = tt.setting(default=0, observable=False)
    temperature: float = tt.property(default=20.0)
    """Not a setting: never stored."""

    def __init__(self) -> None:
        super().__init__()
        self.seen_at_enter: dict[str, Any] | None = None
        self.at_enter: dict[str, Any] = {}
        self.at_exit: dict[str, Any] = {}

    async def __aenter__(self) -> Camera:
        self.seen_at_enter = {"exposure": self.exposure, "gain": self.gain,
                              "serial": self.serial}
        for name, value in self.at_enter.items():
            setattr(self, name, value)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for name, value in self.at_exit.items():
            setattr(self, name, value)

    @tt.action
    def calibrate(self, gain: int) -> int:
        """Thing code in a worker thread changes a setting."""
        self.gain = gain
        return self.gain

    @tt.action
    def sweep(self, count: int) -> int:
        """A burst of changes, from a worker thread."""
        for level in range(count):
            self.level = level
        return self.level


class Plain(tt.Thing):
    """No settings at all."""

    speed: int = tt.property(default=0)


DEFAULTS = {"exposure": 10.0, "gain": 1, "label": "cam", "level": 0, "quiet": 0,
            "serial": "unknown"}


def stored(folder: Path, name: str = "camera") -> Any:
    return json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))


def settings_records(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING
                     ) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def rejected(folder: Path, name: str = "camera") -> list[Path]:
    return sorted(folder.glob(f"{name}.json.rejected-*"))


# ----------------------------------------------------------------------- through a server


async def test_settings_survive_a_restart(tmp_path: Path) -> None:
    config = ServerConfig(settings_folder=tmp_path / "settings")
    first = Camera()
    with trio.fail_after(TIMEOUT):
        async with serve_in_memory(first, config=config) as served, served.http() as http:
            assert first.seen_at_enter == {"exposure": 10.0, "gain": 1, "serial": "unknown"}
            assert (await http.put("/camera/exposure", 25.5)).status == 204
            assert (await http.put("/camera/label", "Ünïcode ✓")).status == 204
            assert (await http.put("/camera/temperature", 30)).status == 204
            assert (await http.post("/camera/actions/calibrate", {"gain": 4})).json() == 4
            store = served.server._settings["camera"]
            await store.wait_saved()  # saved while serving, not only at the end
            assert stored(config.settings_folder) == {
                **DEFAULTS, "exposure": 25.5, "gain": 4, "label": "Ünïcode ✓"}
        second = Camera()
        async with serve_in_memory(second, config=config) as served, served.http() as http:
            # Loaded before the server entered the Thing: __aenter__ saw them.
            assert second.seen_at_enter == {"exposure": 25.5, "gain": 4, "serial": "unknown"}
            assert (await http.get("/camera/exposure")).json() == 25.5
            assert (await http.get("/camera/gain")).json() == 4
            assert (await http.get("/camera/label")).json() == "Ünïcode ✓"
            assert (await http.get("/camera/temperature")).json() == 20.0  # not a setting
    raw = (config.settings_folder / "camera.json").read_bytes()
    assert raw == encode_settings({**DEFAULTS, "exposure": 25.5, "gain": 4,
                                   "label": "Ünïcode ✓"})
    assert raw.startswith(b'{\n  "exposure": 25.5,\n  "gain": 4,\n')  # indented, sorted
    assert "Ünïcode ✓".encode() in raw  # UTF-8, not escapes
    assert [p.name for p in config.settings_folder.iterdir()] == ["camera.json"]


async def test_a_burst_of_a_thousand_changes_costs_two_writes(tmp_path: Path) -> None:
    """The first write is held in its thread while a worker thread makes 1,000 changes:
    they all wait for it, then one more write saves the last of them."""
    gate, entered = threading.Event(), threading.Event()
    saved: list[Any] = []

    def held_save(path: Path, data: bytes) -> None:
        saved.append(json.loads(data))
        entered.set()
        if not gate.wait(TIMEOUT):
            raise TimeoutError("the test never opened the gate")
        save_atomically(path, data)

    camera = Camera()
    config = ServerConfig(settings_folder=tmp_path)
    with trio.fail_after(TIMEOUT):
        async with serve_in_memory(camera, config=config) as served, served.http() as http:
            store = served.server._settings["camera"]
            store._save = held_save
            camera.level = -1  # on the Trio thread: wakes the writer, which is held
            await trio.to_thread.run_sync(entered.wait, TIMEOUT)
            assert (await http.post("/camera/actions/sweep", {"count": 1000})).json() == 999
            gate.set()
    assert [s["level"] for s in saved] == [-1, 999]
    assert store.writes == 2
    assert stored(tmp_path)["level"] == 999


async def test_changes_on_the_trio_thread_coalesce_into_one_write(tmp_path: Path) -> None:
    camera = Camera()
    async with serve_in_memory(camera, config=ServerConfig(settings_folder=tmp_path)) as served:
        store = served.server._settings["camera"]
        for level in range(1000):
            camera.level = level
        await store.wait_saved()
        assert store.writes == 1
        assert stored(tmp_path)["level"] == 999


async def test_a_clean_shutdown_saves_what_is_pending(tmp_path: Path) -> None:
    camera = Camera()
    camera.at_exit = {"label": "parked"}  # changed in __aexit__, after the writer ended
    async with serve_in_memory(camera, config=ServerConfig(settings_folder=tmp_path)):
        camera.gain = 7  # and leave at once, before the writer could run
        camera.quiet = 3  # not observable: no notifier call, saved by the flush
    assert stored(tmp_path) == {**DEFAULTS, "gain": 7, "quiet": 3, "label": "parked"}


async def test_what_aenter_changed_is_saved_at_once(tmp_path: Path) -> None:
    camera = Camera()
    camera.at_enter = {"serial": "SN-0042"}  # before the notifier: the writer checks
    async with serve_in_memory(camera, config=ServerConfig(settings_folder=tmp_path)) as served:
        await served.server._settings["camera"].wait_saved()
        assert stored(tmp_path)["serial"] == "SN-0042"


async def test_a_cancelled_server_still_saves_what_is_pending(tmp_path: Path) -> None:
    camera = Camera()
    server = ThingServer(ServerConfig(settings_folder=tmp_path))
    server.add_thing("camera", camera)
    with trio.CancelScope() as scope:
        async with server.running():
            camera.gain = 9
            scope.cancel()  # as Ctrl-C does: the flush is shielded
            await trio.sleep_forever()
    assert stored(tmp_path)["gain"] == 9


async def test_settings_never_changed_write_no_file(tmp_path: Path) -> None:
    folder = tmp_path / "made" / "at" / "start"
    async with serve_in_memory(Camera(), config=ServerConfig(settings_folder=folder)) as served:
        assert folder.is_dir()
        assert served.server._settings["camera"].writes == 0
    assert list(folder.iterdir()) == []


async def test_things_without_settings_touch_no_disk(tmp_path: Path) -> None:
    folder = tmp_path / "settings"
    async with serve_in_memory(Plain(), config=ServerConfig(settings_folder=folder)) as served, \
            served.http() as http:
        assert (await http.put("/plain/speed", 3)).status == 204
        assert served.server._settings == {}
    assert not folder.exists()


# --------------------------------------------------------------------- the store, directly


async def test_a_change_in_a_worker_thread_reaches_the_store_unobserved(tmp_path: Path) -> None:
    """The notifier's hook: a setting changed in a thread, with nobody observing it,
    wakes the writer on the Trio thread; a property that is no setting does not."""
    camera = Camera()
    calls: list[tuple[str, bool]] = []
    store = SettingsStore("camera", camera, tmp_path)
    await store.load()

    def changed(name: str) -> None:
        calls.append((name, threading.current_thread() is threading.main_thread()))
        store.changed(name)

    observers = ObserverRegistry({"camera": (list(Camera.affordances.properties), [], [], [])})
    camera._tt_set_notifier(ThingNotifier("camera", TrioBridge(), History({}, size=0),
                                          observers, on_setting=changed))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.run)
        await trio.to_thread.run_sync(setattr, camera, "temperature", 25.0)
        await trio.to_thread.run_sync(setattr, camera, "exposure", 50.0)
        await store.wait_saved()
        assert calls == [("exposure", True)]
        assert stored(tmp_path)["exposure"] == 50.0
        nursery.cancel_scope.cancel()


async def test_the_flush_is_bounded_and_does_nothing_when_nothing_is_pending(
        tmp_path: Path, autojump_clock: trio.testing.MockClock,
        caplog: pytest.LogCaptureFixture) -> None:
    release, started = threading.Event(), threading.Event()
    calls: list[bytes] = []

    def stuck(path: Path, data: bytes) -> None:
        calls.append(data)
        started.set()
        release.wait(TIMEOUT)

    camera = Camera()
    store = SettingsStore("camera", camera, tmp_path, save=stuck)
    await store.load()
    await store.flush(timeout=1.0)
    assert calls == []  # nothing pending: no I/O, no wait
    camera.gain = 2
    start = trio.current_time()
    try:
        with caplog.at_level(logging.ERROR, logger=LOGGER):
            await store.flush(timeout=1.0)
        assert trio.current_time() - start == pytest.approx(1.0)
        # The autojump clock may have jumped before the thread began: wait for it.
        assert await trio.to_thread.run_sync(started.wait, TIMEOUT)
        assert len(calls) == 1
        [line] = settings_records(caplog, logging.ERROR)
        assert "not saved to" in line and "within 1 s" in line
        camera.gain = 3
        await store.flush(timeout=1.0)  # never a second write beside the stuck one
        assert len(calls) == 1
    finally:
        release.set()


async def test_a_failed_write_is_logged_and_tried_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[bytes] = []

    def failing_once(path: Path, data: bytes) -> None:
        attempts.append(data)
        if len(attempts) == 1:
            raise OSError(28, "No space left on device")
        save_atomically(path, data)

    camera = Camera()
    store = SettingsStore("camera", camera, tmp_path, save=failing_once)
    await store.load()
    camera.gain = 3
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await store.flush()
    [line] = settings_records(caplog, logging.ERROR)
    assert "No space left on device" in line and str(tmp_path / "camera.json") in line
    assert not (tmp_path / "camera.json").exists()
    await store.flush()  # what failed is still pending
    assert stored(tmp_path)["gain"] == 3 and len(attempts) == 2


# ----------------------------------------------------------------------------- bad files


async def load(folder: Path, camera: Camera | None = None) -> tuple[Camera, SettingsStore]:
    camera = camera or Camera()
    store = SettingsStore("camera", camera, folder)
    await store.load()
    return camera, store


async def test_a_value_that_no_longer_validates(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    original = b'{"exposure": 5000, "gain": 4}'
    (tmp_path / "camera.json").write_bytes(original)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        camera, _ = await load(tmp_path)
    assert (camera.exposure, camera.gain) == (10.0, 4)  # the default; the valid field loads
    [line] = settings_records(caplog)
    [aside] = rejected(tmp_path)
    assert str(tmp_path / "camera.json") in line
    assert "field 'exposure': 5000 is greater than the maximum 1000" in line
    assert f"kept as {aside.name}" in line
    assert aside.read_bytes() == original  # kept aside, never written over
    assert stored(tmp_path) == {**DEFAULTS, "gain": 4}


@pytest.mark.parametrize(("content", "why"), [
    (b"[1, 2]", "not a JSON object but list"),
    (b'"exposure"', "not a JSON object but str"),
    (b'{"exposure": 20', "not JSON"),
    (b"", "not JSON"),
    (b'{"label": "\xff"}', "not JSON"),
], ids=["list", "string", "torn", "empty", "not-utf8"])
async def test_a_file_that_is_not_a_json_object(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, why: str) -> None:
    (tmp_path / "camera.json").write_bytes(content)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        camera, _ = await load(tmp_path)
    assert camera.exposure == 10.0 and camera.label == "cam"
    [line] = settings_records(caplog)
    assert str(tmp_path / "camera.json") in line and why in line
    assert "every setting takes its default" in line
    [aside] = rejected(tmp_path)
    assert aside.read_bytes() == content
    assert stored(tmp_path) == DEFAULTS


async def test_a_key_that_is_no_setting(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                        ) -> None:
    (tmp_path / "camera.json").write_text('{"gain": 3, "zoom": 2, "temperature": 99}')
    with caplog.at_level(logging.INFO, logger=LOGGER):
        camera, _ = await load(tmp_path)
    assert (camera.gain, camera.temperature) == (3, 20.0)
    zoom, temperature = settings_records(caplog)  # in the file's order
    assert "field 'zoom': Camera has no setting of that name; ignored" in zoom
    assert "field 'temperature': Camera has no setting of that name" in temperature
    assert len(rejected(tmp_path)) == 1
    assert stored(tmp_path) == {**DEFAULTS, "gain": 3}


async def test_a_rejected_file_never_overwrites_an_earlier_one(tmp_path: Path) -> None:
    for content in (b"[1]", b"[2]", b"[3]"):
        (tmp_path / "camera.json").write_bytes(content)
        await load(tmp_path)
    assert sorted(p.read_bytes() for p in rejected(tmp_path)) == [b"[1]", b"[2]", b"[3]"]


async def test_a_good_file_loads_without_a_word_or_a_write(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "camera.json").write_text('{"gain": 5, "serial": "SN-1"}')
    with caplog.at_level(logging.INFO, logger=LOGGER):
        camera, store = await load(tmp_path)
    assert (camera.gain, camera.serial) == (5, "SN-1")  # readonly to clients, not to a load
    assert [r for r in caplog.records if r.name == LOGGER] == []
    assert store.writes == 0 and rejected(tmp_path) == []
    assert (tmp_path / "camera.json").read_text() == '{"gain": 5, "serial": "SN-1"}'


async def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    (tmp_path / "camera.json").write_text('{"gain": 2}')
    (tmp_path / ".camera.json.0123abcd.tmp").write_text('{"gain": 1')
    (tmp_path / ".other.json.0123abcd.tmp").write_text("another Thing's")
    camera, _ = await load(tmp_path)
    assert camera.gain == 2
    assert sorted(os.listdir(tmp_path)) == [".other.json.0123abcd.tmp", "camera.json"]


# ----------------------------------------------------------------------- LabThings migration


async def test_labthings_settings_are_migrated_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    legacy = labthings_settings_path(tmp_path, "camera", Camera())
    assert legacy == tmp_path / "camera" / "Settings-Camera.json"
    legacy.parent.mkdir()
    legacy.write_text('{"exposure": 42.0, "gain": 2}')
    before = legacy.stat()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        camera, store = await load(tmp_path)
    assert (camera.exposure, camera.gain) == (42.0, 2)
    [line] = settings_records(caplog, logging.INFO)
    assert "migrated from the LabThings file" in line and str(legacy) in line
    assert stored(tmp_path) == {**DEFAULTS, "exposure": 42.0, "gain": 2}
    assert store.writes == 1
    after = legacy.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    # Once: from now on our file is read, and the LabThings one left alone.
    legacy.write_text('{"exposure": 1.0}')
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        camera, _ = await load(tmp_path)
    assert camera.exposure == 42.0
    assert [r for r in caplog.records if r.name == LOGGER] == []


async def test_a_bad_labthings_field_is_logged_and_the_file_left_alone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    legacy = labthings_settings_path(tmp_path, "camera", Camera())
    legacy.parent.mkdir()
    legacy.write_text('{"exposure": -1, "gain": 2}')
    with caplog.at_level(logging.INFO, logger=LOGGER):
        camera, _ = await load(tmp_path)
    assert (camera.exposure, camera.gain) == (10.0, 2)
    [warning] = settings_records(caplog)
    assert str(legacy) in warning and "field 'exposure'" in warning
    assert "the LabThings file is left as it is" in warning
    assert legacy.read_text() == '{"exposure": -1, "gain": 2}'
    assert rejected(tmp_path) == [] and rejected(legacy.parent, "Settings-Camera") == []
    assert stored(tmp_path) == {**DEFAULTS, "gain": 2}


# ----------------------------------------------------------------------------- configuration


def test_settings_folder_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "lab").mkdir()
    toml = tmp_path / "lab" / "things.toml"
    toml.write_text('[server]\nsettings_folder = "state/settings"\n')
    assert load_config(toml).settings_folder == tmp_path / "lab" / "state" / "settings"
    toml.write_text(f'[server]\nsettings_folder = "{tmp_path / "abs"}"\n')
    assert load_config(toml).settings_folder == tmp_path / "abs"
    toml.write_text("[server]\n")
    assert load_config(toml).settings_folder == tmp_path / "lab" / "settings"
    toml.write_text("[server]\nsettings_folder = 3\n")
    with pytest.raises(ConfigError, match="settings_folder must be a string"):
        load_config(toml)


def test_settings_folder_defaults() -> None:
    assert ServerConfig().settings_folder == Path("settings")
    assert ServerConfig(settings_folder="x/y").settings_folder == Path("x/y")  # type: ignore[arg-type]
    assert settings_of(Plain()) == {}
    assert sorted(settings_of(Camera())) == sorted(DEFAULTS)
