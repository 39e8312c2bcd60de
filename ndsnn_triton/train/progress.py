"""A one-line progress display with rate and ETA (stderr)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Redraws one line on a terminal; elsewhere prints a line every ``interval`` seconds."""

    def __init__(
        self,
        total: int,
        start: int = 0,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float = 10.0,
    ) -> None:
        self.total, self.done, self.enabled = total, start, enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.2 if self.tty else interval
        self.started, self.first, self.last = time.perf_counter(), start, 0.0

    def update(self, done: int, text: str = "") -> None:
        self.done = done
        now = time.perf_counter()
        if not self.enabled or (now - self.last < self.interval and done < self.total):
            return
        self.last = now
        rate = (done - self.first) / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        pct = 100.0 * done / max(self.total, 1)
        line = f"step {done}/{self.total} {pct:5.1f}% {text} | {rate:.2f} it/s | ETA {_clock(eta) if eta != float('inf') else '?'}"
        self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
