"""Progress on a terminal (a redrawn bar) or in logs (plain lines at most every few seconds)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Writes to stderr so that ``--json`` output on stdout stays one clean object."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False, interval: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self._last = 0.0
        self._bar = False

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self._bar:
            self.stream.write("\n")
            self._bar = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def tick(self, done: int, total: int) -> None:
        if self.quiet or total <= 0:
            return
        now = time.monotonic()
        final = done >= total
        if self.tty:
            if not final and now - self._last < 0.1:
                return
            width = 30
            filled = int(width * min(done, total) / total)
            self.stream.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} events")
            self._bar = not final
            if final:
                self.stream.write("\n")
        else:
            if not final and now - self._last < self.interval:
                return
            self.stream.write(f"  sent {done:,}/{total:,} events\n")
        self._last = now
        self.stream.flush()
