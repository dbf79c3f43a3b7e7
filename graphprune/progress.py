"""A minimal progress bar on stderr for work that runs longer than a second.

Nothing is printed during the first second (short work stays quiet) nor when stderr is not a
terminal, unless `force=True`. One line, redrawn in place; `close()` ends it.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: float, *, enabled: bool = True, force: bool = False,
                 stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(float(total), 1e-12)
        self.stream = stream or sys.stderr
        self.enabled = enabled and (force or self.stream.isatty())
        self.start = time.perf_counter()
        self.shown = False
        self._last = 0.0

    def update(self, done: float, note: str = "") -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.start < 1.0 or now - self._last < 0.1:
            return
        self._last = now
        frac = min(max(done / self.total, 0.0), 1.0)
        bar = "#" * int(frac * 30)
        self.stream.write(f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% {now - self.start:6.1f}s {note}")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
