"""Chunks of a generation run as they complete, whatever the engine's scheduler.

``GenerationStore.run`` writes a chunk (problems [k*n, (k+1)*n) of every pending cell) as soon as all its
completions exist. With static batches each chunk is one ``generate`` call, in chunk order. With
continuous batching every pending chunk goes into ONE call (admitted in chunk order), so rows of chunk
k+1 fill the slots that chunk k's rows free instead of idling behind its longest row; a chunk is
handed back the moment its last row finishes. Light on purpose (no torch import): the Dagster
definitions import ``generation``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bt_assets.lib.engine import Completion, Request


def by_chunk(
    groups: Mapping[int, Sequence[Request]],
    decode: Callable[[list[Request]], Iterable[list[Completion]]],
    *,
    together: bool,
    call_done: Callable[[], None] = lambda: None,
) -> Iterator[tuple[int, list[Completion], float]]:
    """(chunk k, its completions, seconds since the previous chunk was handed back) per chunk of
    ``groups`` (k -> its requests) as each completes. ``decode(requests)`` is one engine call yielding
    lists of completions; ``together``: one call for every chunk (continuous batching), else one call
    per chunk. ``call_done`` runs after each call (e.g. ``ProgressLog.chunk_done``)."""
    t0 = time.perf_counter()
    if not together:
        for k, reqs in groups.items():
            done = [c for batch in decode(list(reqs)) for c in batch]
            call_done()
            now = time.perf_counter()
            yield k, done, now - t0
            t0 = now
        return
    chunk_of = {id(r): k for k, reqs in groups.items() for r in reqs}
    left = {k: len(reqs) for k, reqs in groups.items()}
    got: dict[int, list[Completion]] = {k: [] for k in groups}
    for batch in decode([r for reqs in groups.values() for r in reqs]):
        for c in batch:
            k = chunk_of[id(c.request)]
            got[k].append(c)
            left[k] -= 1
            if left[k] == 0:
                now = time.perf_counter()
                yield k, got.pop(k), now - t0
                t0 = now
    call_done()
