"""The Dask keys of a run's tasks, made here for :func:`qcf_studio.engine.run.distributed.start_run` and read back here
for
views of the cluster (``qcf_studio.app.cluster.describe_task``: which run, member and rank a worker is busy with).

A run id is 12 hex digits; a member's task is ``member-<m>-<run id>``, a data-parallel rank's
``member-<m>-rank-<r>-<run id>`` and the maximum-likelihood reference fit's ``mle-reference-<run id>``.
Keys of any other form (another client's tasks on a shared scheduler) are not a run's.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["RunTask", "new_run_id", "member_key", "reference_key", "parse_task_key"]

_RUN_ID_DIGITS = 12
_KEY = re.compile(
    r"^(?:member-(?P<member>\d+)-(?:rank-(?P<rank>\d+)-)?|(?P<mle>mle-reference)-)"
    rf"(?P<run>[0-9a-f]{{{_RUN_ID_DIGITS}}})$"
)


@dataclass(frozen=True)
class RunTask:
    """What a task key says: its run, and its member and rank (``None``: the MLE reference; not data-parallel)."""

    run_id: str
    member: int | None = None
    rank: int | None = None

    @property
    def is_reference(self) -> bool:
        return self.member is None


def new_run_id() -> str:
    """A fresh run id (it names the run's tasks, topic, events and variables on the scheduler)."""
    return uuid.uuid4().hex[:_RUN_ID_DIGITS]


def member_key(run_id: str, member: int, rank: int | None = None) -> str:
    """The key of member ``member``'s task, or of its data-parallel rank ``rank``."""
    return f"member-{member}-{run_id}" if rank is None else f"member-{member}-rank-{rank}-{run_id}"


def reference_key(run_id: str) -> str:
    """The key of the run's maximum-likelihood reference fit."""
    return f"mle-reference-{run_id}"


def parse_task_key(key: Any) -> RunTask | None:
    """The :class:`RunTask` a key of :func:`member_key` or :func:`reference_key` names; ``None`` for any other key."""
    m = _KEY.match(key) if isinstance(key, str) else None
    if m is None:
        return None
    if m["mle"]:
        return RunTask(m["run"])
    return RunTask(m["run"], int(m["member"]), None if m["rank"] is None else int(m["rank"]))
