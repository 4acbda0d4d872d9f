"""Progress of the long commands on stderr: ``qcf-studio run`` (the steps of all members) and ``qcf-studio
campaign`` (its fits), both through :class:`Progress`.

On a terminal it is a tqdm bar redrawn in place. Anywhere else (a batch job's log, a pipe) a redrawn bar is a
stream of carriage returns several times a second (a 67 s run left 24 kB of one-line bar in a SLURM log), so
there it is a plain line ending in a newline: at the first report, after about every tenth of the work or
every 30 s (whichever comes first), and at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

__all__ = ["Progress", "ProgressBarSink"]


class Progress:
    """``done`` of ``total`` units of work (steps, fits), shown on ``stream`` (default: stderr).

    Arguments:
        total: the work in all.
        desc: what is shown first, the run's or the campaign's name.
        unit: the unit's name ("step", "fit").
        initial: work done before this process started (a resumed campaign's fits); not counted into the rate.
        stream: where it goes; a bar only where this is a terminal.
        time_left: seconds left, when the caller knows better than the rate of units (a campaign whose GAN fits
            cost fifty likelihood fits each); ``None`` from it: not known yet.
    """

    line_fraction = 0.1  # without a terminal: a line once another tenth of the work is done,
    line_seconds = 30.0  # or once this long has passed since the last line, whichever comes first

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str,
        initial: int = 0,
        stream: TextIO | None = None,
        time_left: Callable[[], float | None] | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.time_left = time_left
        self.total, self.desc, self.unit = total, desc, unit
        self.done = self.initial = initial
        self.postfix: dict[str, Any] = {}
        self.started = self.last_line_time = time.monotonic()
        self.last_line_done: int | None = None  # no line yet
        self.bar: Any = None
        if _is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                unit=unit,
                file=self.stream,
                desc=desc,
                mininterval=0.5,
                dynamic_ncols=True,
                # the caller's time left goes into the postfix, tqdm's own estimate (from the rate) is left out
                bar_format=None if time_left is None else "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
            )

    def set(self, done: int, postfix: dict[str, Any] | None = None) -> None:
        """The work done is now ``done``; ``postfix``: figures shown beside it (losses, failures)."""
        if postfix is not None:
            self.postfix = postfix
        self.done = done
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            if postfix is not None or self.time_left is not None:
                left = self._left()
                shown = dict(self.postfix)
                if left is not None:
                    shown["left"] = left
                self.bar.set_postfix(shown, refresh=False)
        elif self._line_due():
            self._line()

    def write(self, line: str) -> None:
        """A message of its own (above the bar, without breaking it)."""
        if self.bar is not None:
            self.bar.write(line, file=self.stream)  # tqdm.write goes to stdout unless told
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.last_line_done != self.done:
            self._line()

    def _line_due(self) -> bool:
        if self.last_line_done is None or time.monotonic() - self.last_line_time >= self.line_seconds:
            return True
        tenth = max(self.total * self.line_fraction, 1.0)
        return self.done // tenth > self.last_line_done // tenth

    def _line(self) -> None:
        from tqdm import tqdm

        now = time.monotonic()
        elapsed = now - self.started
        percent = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.desc}: {self.done}/{self.total} {self.unit}s{percent}", tqdm.format_interval(elapsed)]
        left = self._left()
        if left is not None:
            parts[-1] += f", about {left} left"
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        print(", ".join(parts), file=self.stream, flush=True)
        self.last_line_time, self.last_line_done = now, self.done

    def _left(self) -> str | None:
        """The time left as ``h:mm:ss`` (``None``: not known, or nothing left)."""
        from tqdm import tqdm

        if not 0 < self.done < self.total:
            return None
        if self.time_left is not None:
            seconds = self.time_left()
        else:
            elapsed = time.monotonic() - self.started
            rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
            seconds = (self.total - self.done) / rate if rate > 0 else None
        return None if seconds is None or not seconds >= 0 else tqdm.format_interval(seconds)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class ProgressBarSink:
    """A MetricsSink showing one :class:`Progress` over all members' steps, with the latest losses.

    A step is whatever the method counts (GAN: a training step; mle: an L-BFGS iteration, far fewer than
    ``training.steps`` when the fit converges), so :meth:`finish` counts a completed member as all its steps.
    """

    shown_metrics = ("loss_g", "loss_d", "nll")  # gan, gan, mle: whichever a member reports

    def __init__(self, steps: int, members: int, desc: str) -> None:
        self.steps = steps
        self.progress = Progress(steps * members, desc, "step")
        self.last_step: dict[int, int] = {}

    def log_metrics(self, member: int, step: int, metrics: dict[str, float]) -> None:
        self.last_step[member] = min(step, self.steps)  # a resumed member's step may go back: shown as it is
        shown = {k: f"{metrics[k]:.3f}" for k in self.shown_metrics if k in metrics}
        self.progress.set(sum(self.last_step.values()), shown or None)

    def log_snapshot(self, member: int, step: int, snapshot: dict[str, Any]) -> None:
        pass

    def finish(self, members: Iterable[Any]) -> None:
        """The members' results are in (:class:`~qcf_studio.engine.gan.trainer.MemberResult`): a completed one did all
        its
        work, whatever its step count."""
        for result in members:
            if result.status == "completed":
                self.last_step[result.member] = self.steps
        self.progress.set(sum(self.last_step.values()))

    def write(self, line: str) -> None:
        self.progress.write(line)

    def close(self) -> None:
        self.progress.close()
