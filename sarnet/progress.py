"""Progress with an ETA for the phases that take more than a few seconds (FID sets, kNN, likelihood scoring, the
FID classifier's first training, sampling in the commands): a tqdm bar on a terminal, else one line every
`every` seconds, which lands in train.log too inside a train.py run (nohup, SLURM, CI have no terminal)."""

import logging
import sys
import time

log = logging.getLogger("sarnet")


def duration(seconds: float) -> str:
    """4.2 s, 42 s, 3 min 05 s, 2 h 03 min."""
    if seconds < 9.95:
        return f"{max(seconds, 0):.1f} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def say(line: str):
    """Through the logging config when there is one (train.py's Hydra: console and train.log), else on stderr: a
    command's stdout holds only its results."""
    if logging.getLogger().handlers:
        log.info(line)
    else:
        print(line, file=sys.stderr, flush=True)


class Progress:
    """`total` units of work done in update(n) steps. Shows nothing for the first `delay` seconds (a short phase
    stays silent); then a bar when stderr is a terminal, else a line through say() at most every `every` s.
    note(line) reports a result on the way (an FID set's value) with the time spent and the ETA appended, through
    `out` (default say)."""

    def __init__(self, total: float, what: str, unit: str = "images", every: float = 30.0, delay: float = 3.0,
                 enabled: bool = True):
        self.total, self.what, self.unit, self.every, self.delay = total, what, unit, every, delay
        self.done, self.start = 0.0, time.monotonic()
        self.last = self.start  # when a line was last written (the start counts: the first comes after `every`)
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm  # a dependency of Lightning
            self.bar = tqdm(total=total, desc=what, unit=unit.rstrip("s") or "it", delay=delay, leave=False)
        self.enabled = enabled

    def eta(self) -> str:
        elapsed = time.monotonic() - self.start
        if self.done <= 0 or self.done >= self.total:
            return duration(elapsed)
        return f"{duration(elapsed)}, ~{duration(elapsed * (self.total - self.done) / self.done)} left"

    def update(self, n: float = 1):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if self.enabled and now - self.start >= self.delay and now - self.last >= self.every and \
                self.done < self.total:
            self.last = now
            say(f"{self.what}: {self.done:.0f}/{self.total:.0f} {self.unit} ({self.eta()})")

    def note(self, line: str, out=say):
        if self.bar is not None:
            self.bar.clear()
        if self.enabled:
            out(f"{line} ({self.eta()})")
        self.last = time.monotonic()
        if self.bar is not None:
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()
