"""Training progress on stderr, built on ``tqdm``.

On a terminal this is an ordinary ``tqdm`` bar. Anywhere else (log files, CI, ``nohup``) a
redrawn bar would fill the log with carriage returns, so instead one plain line is written every
``interval`` seconds and once more at the end, formatted by ``tqdm.format_meter``::

    step 120/400  30.0% train epoch 2/5 |  3.10it/s | elapsed 00:38 | ETA 01:30
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

#: The plain line written when the stream is not a terminal (``tqdm.format_meter`` fields).
LINE_FORMAT = (
    "step {n_fmt}/{total_fmt} {percentage:5.1f}% {desc} | {rate_noinv_fmt}"
    " | elapsed {elapsed} | ETA {remaining}"
)


class Progress:
    """Progress of ``total`` steps, resumed at ``start``; ``enabled=False`` writes nothing.

    ``update(done, text)`` reports that ``done`` steps are finished (``text``: the phase and
    epoch); ``close()`` ends the display. Usable as a context manager.
    """

    def __init__(
        self,
        total: int,
        start: int = 0,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.start, self.done, self.text = total, start, start, ""
        self.enabled, self.interval, self.clock = enabled, interval, clock
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.bar: tqdm | None = None
        if enabled and self.tty:
            self.bar = tqdm(
                total=total,
                initial=start,
                unit="step",
                file=self.stream,
                dynamic_ncols=True,
                leave=True,
            )
        self.started = clock()
        self.last_time = -float("inf")  # the first update writes a line at once
        self.last_done: int | None = None  # the step the last plain line reported
        self.closed = False

    def update(self, done: int, text: str = "") -> None:
        self.done, self.text = done, text
        if not self.enabled or self.closed:
            return
        if self.bar is not None:
            if text != self.bar.desc:
                self.bar.set_description_str(text, refresh=False)
            self.bar.update(done - self.bar.n)
            return
        now = self.clock()
        finished = done >= self.total and self.last_done != done
        if finished or now - self.last_time >= self.interval:
            self._write_line(now)

    def line(self, now: float | None = None) -> str:
        """The plain progress line for the current state."""
        elapsed = (self.clock() if now is None else now) - self.started
        return tqdm.format_meter(
            self.done,
            self.total,
            elapsed,
            prefix=self.text,
            unit="it",
            bar_format=LINE_FORMAT,
            initial=self.start,
        )

    def _write_line(self, now: float) -> None:
        self.last_time, self.last_done = now, self.done
        self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the display; without a terminal, report steps done since the last line."""
        if self.closed or not self.enabled:
            self.closed = True
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.last_done is not None and self.last_done != self.done:
            self._write_line(self.clock())

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
