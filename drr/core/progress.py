"""Progress lines with an estimate of the time left, readable in a terminal and in a log file.

Snakemake sends a rule's output to a log file, where a carriage-return progress bar turns into one
unreadable line, so progress here is a line printed at most every `every` seconds (and at the end)::

    [train_tokenizer] 480/1500 (32.0%) loss=0.0213 | 11.4 it/s | elapsed 0:00:42 | left 0:01:29
"""

from __future__ import annotations

import sys
import time


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, total: int, desc: str, start: int = 0, every: float = 10.0, unit: str = "it",
                 stream=None, enabled: bool = True):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.start = start
        self.every, self.enabled = every, enabled
        self.stream = stream or sys.stderr
        self.t0 = self.last = time.monotonic()

    def update(self, n: int = 1, **metrics) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every or self.n >= self.total:
            self.last = now
            self.print(**metrics)

    def line(self, **metrics) -> str:
        elapsed = time.monotonic() - self.t0
        done = self.n - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.n) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.n / self.total if self.total else 100.0
        parts = [f"[{self.desc}] {self.n}/{self.total} ({pct:.1f}%)"]
        if metrics:
            parts[0] += " " + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        parts.append(f"{rate:.3g} {self.unit}/s")
        parts.append(f"elapsed {_hms(elapsed)}")
        parts.append(f"left {_hms(left)}" if left == left else "left ?")
        return " | ".join(parts)

    def print(self, **metrics) -> None:
        if self.enabled:
            print(self.line(**metrics), file=self.stream, flush=True)


def log(msg: str) -> None:
    """One line of a job's own log on stderr, flushed at once (the progress lines go there too)."""
    print(msg, file=sys.stderr, flush=True)
