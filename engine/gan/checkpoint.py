"""Checkpoints of a GAN trainer: state dicts and the metric history, as bytes.

A checkpoint holds the generator, the discriminators, their optimisers and learning-rate
schedules, the random-number state, the step, the running parameter average (``average_last``)
and the metric history so far. It is written with
``torch.save`` and read back with ``torch.load(weights_only=True)``: tensors, numbers, strings
and containers only, never pickled code. Where the bytes are kept (a Dask variable on the
scheduler, a file) is the caller's business.

Checkpoints are device-portable: every tensor is saved on the CPU and loaded with
``map_location="cpu"``, then copied onto the resuming trainer's device, so a member checkpointed
on a GPU worker resumes on a CPU worker and vice versa. The random stream resumes exactly on the
same kind of device; CPU and CUDA generators have different states, so across kinds it is
reseeded from the saved state (deterministic, but not the stream an unbroken run would have drawn).
"""

from __future__ import annotations

import hashlib
import io
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from qcf_studio.engine.gan.trainer import GANTrainer

__all__ = ["CheckpointStore", "MemoryCheckpointStore", "save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 3  # 3: the real batches' random stream (real_rng)


class CheckpointStore(Protocol):
    """Keeps the latest checkpoint of one ensemble member (or data-parallel rank)."""

    def load(self) -> bytes | None:
        """The latest checkpoint, or ``None`` if there is none."""

    def save(self, blob: bytes, step: int) -> None:
        """Replace the latest checkpoint by ``blob``, taken after ``step`` steps."""


class MemoryCheckpointStore:
    """A checkpoint store in this process's memory (tests, single-process runs)."""

    def __init__(self) -> None:
        self.blob: bytes | None = None
        self.steps: list[int] = []  # every step saved at

    def load(self) -> bytes | None:
        return self.blob

    def save(self, blob: bytes, step: int) -> None:
        self.blob = blob
        self.steps.append(step)


def _modules(trainer: GANTrainer) -> dict[str, Any]:
    parts = {
        "generator": trainer.generator,
        "discriminator": trainer.discriminator,
        "opt_g": trainer.opt_g,
        "opt_d": trainer.opt_d,
        "sched_g": trainer.sched_g,
        "sched_d": trainer.sched_d,
    }
    if trainer.xsec_discriminator is not None:
        parts["xsec_discriminator"] = trainer.xsec_discriminator
    return parts


def _on_cpu(value: Any) -> Any:
    """``value`` (a state dict: nested dicts, lists, tuples) with every tensor copied to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


def _restore_rng(rng: torch.Generator, state: torch.Tensor, saved_on: str) -> None:
    """Set ``rng`` to ``state``, saved from a generator on a ``saved_on`` device (``cpu``, ``cuda``).

    A state from another kind of device does not fit this generator: it is reseeded from a hash of
    that state instead, so a resume is still reproducible.
    """
    if saved_on == rng.device.type:
        rng.set_state(state)
    else:
        rng.manual_seed(int.from_bytes(hashlib.sha256(state.numpy().tobytes()).digest()[:8], "little"))


def save_checkpoint(trainer: GANTrainer, metrics: dict[str, list[float]]) -> bytes:
    """The trainer's state after ``trainer.step`` steps and the metric history, as bytes (CPU tensors)."""
    state = {name: _on_cpu(part.state_dict()) for name, part in _modules(trainer).items()}
    state.update(
        format=CHECKPOINT_FORMAT,
        step=trainer.step,
        rng=trainer.rng.get_state(),
        real_rng=trainer.real_rng_state(),
        rng_device=trainer.rng.device.type,
        torch_rng=torch.get_rng_state(),
        metrics=metrics,
        param_sum=trainer.param_sum.cpu(),
        param_count=trainer.param_count,
    )
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def load_checkpoint(trainer: GANTrainer, blob: bytes) -> dict[str, list[float]]:
    """Restore ``trainer`` from ``blob`` (``weights_only`` loading, onto the trainer's device, whichever
    device the checkpoint was taken on); return the metric history it held."""
    state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT}")
    parts = _modules(trainer)
    missing = set(parts) - set(state)
    if missing:
        raise ValueError(f"checkpoint lacks {', '.join(sorted(missing))}: it is of a different problem or spec")
    for name, part in parts.items():
        part.load_state_dict(state[name])
    trainer.step = int(state["step"])
    trainer.param_sum, trainer.param_count = state["param_sum"].to(trainer.device), int(state["param_count"])
    _restore_rng(trainer.rng, state["rng"], state.get("rng_device", "cpu"))
    _restore_rng(trainer.real_rng, state["real_rng"], state.get("rng_device", "cpu"))
    trainer.discard_prefetch()  # begun on the discriminator just replaced
    torch.set_rng_state(state["torch_rng"])
    return {k: list(v) for k, v in state["metrics"].items()}
