"""SIGINT and SIGTERM as requests to stop and save, not to die.

A terminal's Ctrl-C sends SIGINT to the whole process group, and a batch system at its time limit sends
SIGTERM; either used to end ``qcf-studio run`` before the members' work was saved. :class:`StopSignals`
turns the first signal into a :class:`Interrupted` exception (a ``BaseException``, so no
``except Exception`` swallows it) at the point the main thread is waiting, after which the caller stops
the members and saves what they have; later signals only say that saving is under way. The embedded
cluster's worker processes ignore both signals (``qcf_studio.engine.run.cluster``), so they live to hand their work
over.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

__all__ = ["Interrupted", "StopSignals", "exit_code", "SIGNALS"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):  # noqa: N818 (a request, like KeyboardInterrupt)
    """The process was asked to stop by ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(signum: int) -> int:
    """The shell's convention for a process ended by ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


class StopSignals:
    """Within ``with StopSignals(...)``, SIGINT and SIGTERM raise :class:`Interrupted` once; afterwards
    (or after :meth:`defer`) a signal is only recorded and ``notice`` is called with a sentence for the user.

    ``received`` is the first signal's number (``None`` if none came). Outside the main thread it does
    nothing (Python delivers signals to the main thread only).
    """

    def __init__(self, notice: Callable[[str], None] | None = None) -> None:
        self.notice = notice or (lambda text: print(f"qcf-studio: {text}", file=sys.stderr, flush=True))
        self.received: int | None = None
        self.deferred = False
        self._previous: dict[int, Any] = {}

    def defer(self) -> None:
        """From now on signals do not interrupt: the work left is saving, which must finish."""
        self.deferred = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            if not self.deferred:
                self.deferred = True
                raise Interrupted(signum)
            self.notice(f"{signal.Signals(signum).name}: saving the run first; it exits when the file is written")
            return
        self.notice(
            f"{signal.Signals(signum).name}: still stopping the members and saving what they have "
            f"(kill -9 would lose the run)"
        )

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
