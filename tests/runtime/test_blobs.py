"""The BlobStore: blobs of outputs counted while in memory, spilled to files in a worker
thread beyond the budget; and a blob's bytes read without blocking the Trio thread."""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path

import pytest
import trio

import trio_things as tt
from trio_things.runtime.blobs import BlobStore, blob_chunks


def blob(size: int, fill: int = 1) -> tt.Blob:
    return tt.Blob(bytes([fill]) * size, media_type="application/octet-stream")


def files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


async def test_in_memory_blobs_are_counted_until_they_die(tmp_path: Path) -> None:
    store = BlobStore(memory_bytes=1000, spill_bytes=1000, folder=tmp_path)
    first, second = blob(100), blob(200)
    await store.keep([first, second, first])  # counted once
    assert (store.memory_bytes, store.in_memory) == (300, 2)
    del first
    gc.collect()
    assert (store.memory_bytes, store.in_memory) == (200, 1)
    assert second.in_memory and files(tmp_path) == []


async def test_a_blob_over_spill_bytes_goes_to_a_file_at_once(tmp_path: Path) -> None:
    store = BlobStore(memory_bytes=10_000, spill_bytes=100, folder=tmp_path)
    small, large = blob(100, 1), blob(101, 2)
    await store.keep([small, large])
    assert small.in_memory and not large.in_memory
    assert store.memory_bytes == 100
    [file] = files(tmp_path)
    assert file.read_bytes() == bytes([2]) * 101 == large.read()
    del large
    gc.collect()
    assert files(tmp_path) == []  # the file goes with the blob


async def test_over_the_budget_the_oldest_spill_first(tmp_path: Path) -> None:
    store = BlobStore(memory_bytes=250, spill_bytes=1000, folder=tmp_path)
    blobs = [blob(100, n) for n in range(4)]
    for each in blobs:
        await store.keep([each])
        assert store.memory_bytes <= 250  # within the budget whenever keep returns
    assert [each.in_memory for each in blobs] == [False, False, True, True]
    assert [each.read() for each in blobs] == [bytes([n]) * 100 for n in range(4)]
    assert len(files(tmp_path)) == 2


async def test_files_are_not_counted(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    path.write_bytes(b"png" * 100)
    from_file = tt.PNG.from_file(path)
    store = BlobStore(memory_bytes=0, spill_bytes=0, folder=tmp_path)
    await store.keep([from_file])
    assert store.memory_bytes == 0
    assert files(tmp_path) == [path]  # not copied


async def test_spilling_runs_in_a_worker_thread(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []
    spill = tt.Blob.spill

    def spill_recording(self: tt.Blob, folder: object = None) -> None:
        threads.append(threading.current_thread())
        spill(self, folder)  # type: ignore[arg-type]

    monkeypatch.setattr(tt.Blob, "spill", spill_recording)
    large = blob(10)
    await BlobStore(spill_bytes=1, folder=tmp_path).keep([large])
    assert not large.in_memory
    assert threads and threading.current_thread() not in threads


async def test_a_failed_spill_is_logged_once_and_the_blob_stays(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gone = tmp_path / "gone"
    store = BlobStore(memory_bytes=0, spill_bytes=1000, folder=gone)
    kept = [blob(10, n) for n in range(3)]
    with caplog.at_level(logging.WARNING, "trio_things.runtime.blobs"):
        for each in kept:
            await store.keep([each])
    assert all(each.in_memory for each in kept)
    assert store.memory_bytes == 30  # over the budget, honestly counted
    assert len([r for r in caplog.records if "cannot move" in r.getMessage()]) == 1
    gone.mkdir()  # it works again: the next keep catches up
    await store.keep([blob(1)])
    assert store.memory_bytes == 0
    assert not any(each.in_memory for each in kept)


async def test_chunks_of_a_blob_in_memory_are_slices_of_its_bytes() -> None:
    data = bytes(range(256)) * 2048  # 512 KiB: two chunks
    pieces = [piece async for piece in blob_chunks(tt.Blob(data), 0, len(data))]
    assert len(pieces) == 2
    assert all(isinstance(piece, memoryview) and piece.obj is data for piece in pieces)
    assert b"".join(pieces) == data
    assert b"".join([piece async for piece in blob_chunks(tt.Blob(data), 10, 20)]) == data[10:20]


async def test_chunks_of_a_file_are_read_in_a_worker_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB: four chunks
    spilled = tt.Blob(data)
    spilled.spill(tmp_path)
    calls: list[object] = []
    run_sync = trio.to_thread.run_sync

    async def recording(fn: object, *args: object, **kwargs: object) -> object:
        calls.append(fn)
        return await run_sync(fn, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trio.to_thread, "run_sync", recording)
    read = b"".join([piece async for piece in blob_chunks(spilled, 5, len(data) - 5)])
    assert read == data[5:-5]
    assert calls and all(fn is next for fn in calls)


async def test_a_download_begun_in_memory_goes_on_when_the_blob_spills(tmp_path: Path) -> None:
    data = bytes(range(256)) * 2048
    kept = tt.Blob(data)
    pieces = blob_chunks(kept, 0, len(data))
    first = await pieces.__anext__()
    kept.spill(tmp_path)
    rest = [piece async for piece in pieces]
    assert bytes(first) + b"".join(rest) == data
