"""The blobs the server keeps for clients, held in memory within a budget; and a blob's
bytes read without blocking the Trio thread.

A blob (:mod:`trio_things.model.blob`) lives as long as something holds it. The server
holds an action's blob outputs for as long as it keeps the invocation
(``invocation_retention``), and an action run a thousand times a minute, returning
images, would fill the memory in that time. So the :class:`BlobStore` bounds what the
kept blobs hold in memory, by moving ("spilling") blobs to temporary files:

* **What is counted.** A blob an action returned (anywhere in its output), from the
  moment the action returned, for as long as it lives and is in memory. Blobs made from
  a file (``Blob.from_file``) hold no memory; blobs a Thing holds in its properties are
  the Thing's own memory, which it holds anyway, and are not counted.
* **When it spills.** Before the invocation is marked ``completed``: first any output
  blob larger than ``spill_bytes`` (it is written straight to a file), then, while the
  blobs counted hold more than ``memory_bytes`` together, the one counted first (the
  oldest). So once an invocation has completed, the counted blobs are within the
  budget; a client downloading a blob while it spills goes on reading the bytes in
  memory, which are freed when it is done.
* **How.** :meth:`~trio_things.model.blob.Blob.spill` runs in a worker thread (disk
  writes never block the Trio thread), one blob at a time, into ``folder`` (the
  system's temporary folder by default). The file is deleted when the blob is: when
  the invocation is forgotten and nothing else holds it.
* **When it cannot.** A spill that fails (a full disk, a folder that went away) is
  logged once, as a warning, and the blob stays in memory; the next completion tries
  again. Memory is then over budget until a spill succeeds.

Counting is by weak reference: a blob that dies (its invocation forgotten) leaves the
count by itself. Its weak reference's callback may run in any thread, at any
allocation (the garbage collector's), even while the count is being changed: it only
appends the id to a queue, which the store empties before it next looks at the count.
Everything else happens on the Trio thread.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import weakref
from collections.abc import AsyncGenerator, Iterable
from typing import Final

import trio

from trio_things.model.blob import Blob

__all__ = ["DEFAULT_MEMORY_BYTES", "DEFAULT_SPILL_BYTES", "BlobStore", "blob_chunks"]

logger = logging.getLogger("trio_things.runtime.blobs")

#: The defaults of ``ServerConfig``'s ``blob_memory_bytes`` and ``blob_spill_bytes``.
DEFAULT_MEMORY_BYTES: Final = 64 * 1024 * 1024
DEFAULT_SPILL_BYTES: Final = 8 * 1024 * 1024
#: Bytes of a blob in memory handed out at a time (slices of it, not copies).
_CHUNK: Final = 256 * 1024


class BlobStore:
    """Counts the blobs kept for clients that are in memory, and spills them to files
    beyond the budget (see the module)."""

    def __init__(self, *, memory_bytes: int = DEFAULT_MEMORY_BYTES,
                 spill_bytes: int = DEFAULT_SPILL_BYTES,
                 folder: str | os.PathLike[str] | None = None) -> None:
        self.memory_budget = memory_bytes
        """Bytes the counted blobs may hold in memory together."""
        self.spill_bytes = spill_bytes
        """A blob larger than this goes to a file at once."""
        self.folder = folder
        """Where spilled blobs go (None: the system's temporary folder)."""
        self._held: dict[str, tuple[weakref.ref[Blob], int]] = {}
        """The counted blobs still in memory, oldest first, with their sizes."""
        self._dead: collections.deque[str] = collections.deque()
        """Ids of counted blobs that died, not yet taken off the count."""
        self._memory = 0
        self._spilling = trio.Lock()
        self._failing = False

    @property
    def memory_bytes(self) -> int:
        """Bytes the counted blobs hold in memory now."""
        self._settle()
        return self._memory

    @property
    def in_memory(self) -> int:
        """How many counted blobs are in memory now."""
        self._settle()
        return len(self._held)

    async def keep(self, blobs: Iterable[Blob]) -> None:
        """Count ``blobs`` (an invocation's, about to complete), then spill as the
        module says, in a worker thread. Never raises but :exc:`trio.Cancelled` (a
        spill already under way finishes first)."""
        fresh = [blob for blob in blobs if self._count(blob)]
        async with self._spilling:
            for blob in fresh:
                if blob.size > self.spill_bytes and not await self._spill(blob):
                    return
            while self.memory_bytes > self.memory_budget:
                oldest = self._oldest()
                if oldest is None or not await self._spill(oldest):
                    return

    def _count(self, blob: Blob) -> bool:
        self._settle()
        if not blob.in_memory or blob.id in self._held:
            return False
        size = blob.size
        self._held[blob.id] = (weakref.ref(blob, functools.partial(self._died, blob.id)),
                               size)
        self._memory += size
        return True

    def _died(self, blob_id: str, _reference: object) -> None:
        """A counted blob died: a weak reference's callback, in any thread."""
        self._dead.append(blob_id)

    def _settle(self) -> None:
        """Take the blobs that died off the count."""
        while self._dead:
            self._forget(self._dead.popleft())

    def _forget(self, blob_id: str) -> None:
        """Stop counting a blob: it spilled, or died."""
        entry = self._held.pop(blob_id, None)
        if entry is not None:
            self._memory -= entry[1]

    def _oldest(self) -> Blob | None:
        for reference, _size in list(self._held.values()):
            blob = reference()
            if blob is not None:
                return blob
        return None

    async def _spill(self, blob: Blob) -> bool:
        """Move ``blob`` to a file in a worker thread; whether it worked."""
        try:
            await trio.to_thread.run_sync(blob.spill, self.folder)
        except OSError as error:
            if not self._failing:
                logger.warning("cannot move a %d-byte blob out of memory into %s (%s); "
                               "blobs stay in memory, over the budget of %d bytes, until "
                               "this works again", blob.size,
                               self.folder or "the temporary folder", error,
                               self.memory_budget)
            self._failing = True
            return False
        self._failing = False
        self._forget(blob.id)
        return True


async def blob_chunks(blob: Blob, start: int, stop: int
                      ) -> AsyncGenerator[bytes | memoryview, None]:
    """The bytes of ``blob`` from ``start`` to ``stop``, in pieces: slices of the bytes
    in memory (no copy), or a file's bytes read in a worker thread. Blobs are
    immutable, so whoever holds the generator reads what the link promised, even if the
    blob spills meanwhile."""
    view = blob.view()
    if view is not None:
        for offset in range(start, stop, _CHUNK):
            yield view[offset:min(offset + _CHUNK, stop)]
        return
    pieces = blob.chunks(start, stop)
    try:
        while (piece := await trio.to_thread.run_sync(next, pieces, None)) is not None:
            yield piece
    finally:
        pieces.close()  # closes the file: the generator stopped between two reads
