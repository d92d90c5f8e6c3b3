"""Progress lines of a long generation (rows done, tokens, tok/s, ETA, live rows) for a run log, and the
engine's progress event (``progress_event``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping


def progress_event(done: int, total: int, tokens: int, elapsed: float) -> dict:
    """The engine's progress event: rows and tokens so far (cumulative within one ``generate`` call),
    rates, and the remaining time at the rows' rate so far (with continuous batching the short rows
    finish first, so the first events' ETA is optimistic; it settles once the slots turn over)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    return {
        "rows_done": done,
        "rows_total": total,
        "tokens": tokens,
        "tok_per_s": tokens / elapsed if elapsed > 0 else 0.0,
        "eta_s": (total - done) / rate if rate > 0 else float("nan"),
    }


class ProgressLog:
    """Throttled progress lines of a long generation: rows done of the run's total, tokens, tok/s, ETA.

    ``batch_done`` takes the engine's per-batch progress dicts (cumulative within one ``generate`` call);
    ``chunk_done`` closes that call; an event with ``live_rows`` (the continuous scheduler) adds the rows
    decoding now and the live-row limit to the line. A line goes out after the first batch, then when
    ``every_s`` seconds have passed since the last line, and when the last row is done."""

    def __init__(
        self,
        emit: Callable[[str], None] | None,
        rows_total: int,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emit, self.rows_total, self.every_s, self.clock = emit, rows_total, every_s, clock
        self.start = clock()
        self.last: float | None = None
        self.rows = self.tokens = 0  # finished generate calls
        self.rows_now = self.tokens_now = 0  # including the call in flight
        self.lines = 0
        self.live = ""  # ", N live rows (limit M)" from the latest event that has them

    def batch_done(self, event: Mapping[str, float]) -> None:
        self.rows_now = self.rows + int(event["rows_done"])
        self.tokens_now = self.tokens + int(event["tokens"])
        if "live_rows" in event:
            self.live = f", {int(event['live_rows'])} live rows (limit {int(event.get('max_rows', 0))})"
        now = self.clock()
        due = self.last is None or now - self.last >= self.every_s or self.rows_now >= self.rows_total
        if self.emit is not None and due:
            self.last = now
            self.lines += 1
            self.emit(self.line(now - self.start))

    def chunk_done(self) -> None:
        self.rows, self.tokens = self.rows_now, self.tokens_now

    def line(self, elapsed: float) -> str:
        rate = self.rows_now / elapsed if elapsed > 0 else 0.0
        eta = (self.rows_total - self.rows_now) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.rows_now / self.rows_total if self.rows_total else 100.0
        return (
            f"generation progress: {self.rows_now}/{self.rows_total} rows ({pct:.0f}%), "
            f"{self.tokens_now} tokens, {self.tokens_now / max(elapsed, 1e-9):.1f} tok/s, "
            f"elapsed {_hms(elapsed)}, ETA {_hms(eta)}{self.live}"
        )


def _hms(seconds: float) -> str:
    if seconds != seconds:  # nan: no rate yet
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
