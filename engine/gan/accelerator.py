"""The speed machinery's one interface: what a GAN trainer asks of it, the plain answers, and the choice.

A trainer (:class:`~qcf_studio.engine.gan.trainer.GANTrainer`) does the same physics whichever accelerator it has; the
accelerator decides how three things run: the discriminators' judgement of each step's events
(:mod:`qcf_studio.engine.gan.judging` with autograd, or the hand-written pass of :mod:`qcf_studio.engine.accel`, on
helper threads
that start on the next step's measured events early), the Adam updates (torch's ``step()``, or its
fused kernel called directly) and the process's heap (left alone, or tuned to keep freed memory).

:func:`make_accelerator` gives :mod:`qcf_studio.engine.accel`'s when it is installed and ``QCF_ACCEL`` is not
``0``, the plain one otherwise: with the ``engine/accel`` folder deleted the engine still trains, slower.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Protocol

import torch
from torch import Tensor, nn

from qcf_studio.engine.gan.judging import Judgement, judge
from qcf_studio.engine.gan.models import Discriminator

__all__ = ["Accelerator", "PlainAccelerator", "make_accelerator", "accel_enabled", "tune_process", "ACCEL_ENV"]

ACCEL_ENV = "QCF_ACCEL"  # "0": the plain path, even where engine.accel is installed

RealBatch = tuple[Tensor, Tensor | None]  # a batch of measured events' features and their weights


class Accelerator(Protocol):
    """How one trainer's steps run. A step calls, in order: :meth:`begin`, :meth:`judge_events` (and
    :meth:`judge` for the cross sections), :meth:`optimizer_step` of the discriminators,
    :meth:`discriminator_updated`, then the generator's backward and :meth:`optimizer_step`; all inside
    :meth:`step`."""

    name: str  # what runs: "plain", or engine.accel's description
    helpers: int  # helper threads of the discriminator pass (0: none)

    def optimizer(self, params: Iterable[Tensor], lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
        """An Adam optimiser of ``params``."""
        ...

    def optimizer_step(self, opt: torch.optim.Optimizer) -> None:
        """``opt.step()``, or the same update faster."""
        ...

    def step(self) -> contextlib.AbstractContextManager[None]:
        """The context one training step runs in."""
        ...

    def begin(self, more: bool) -> None:
        """A step begins: take its batch of measured events (``more``: another step follows this one)."""
        ...

    def judge_events(self, fake: Tensor, weights: Tensor | None) -> Judgement:
        """The event discriminator's judgement of this step's measured events and the generated rows
        ``fake (G, F)`` (features, with autograd history) with their ``weights (G,)``."""
        ...

    def judge(self, net: nn.Sequential, real: Tensor, fake: Tensor) -> Judgement:
        """A small discriminator's judgement of ``real`` and ``fake`` rows (the cross sections')."""
        ...

    def discriminator_updated(self) -> None:
        """The discriminators have stepped."""
        ...

    def real_rng_state(self) -> Tensor:
        """The measured-event batches' random stream as of the last completed step."""
        ...

    def discard(self) -> None:
        """Forget work begun for the next step (the discriminator or the random stream are replaced)."""
        ...


class PlainAccelerator:
    """Autograd (:func:`qcf_studio.engine.gan.judging.judge`) and torch's Adam, one step after the other."""

    name = "plain"
    helpers = 0

    def __init__(self, discriminator: Discriminator, draw_real: Callable[[], RealBatch], real_rng: torch.Generator):
        self.discriminator, self.draw_real, self.real_rng = discriminator, draw_real, real_rng
        self._real: RealBatch | None = None

    def optimizer(self, params: Iterable[Tensor], lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=lr, betas=betas)

    def optimizer_step(self, opt: torch.optim.Optimizer) -> None:
        opt.step()

    def step(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def begin(self, more: bool) -> None:
        self._real = self.draw_real()

    def judge_events(self, fake: Tensor, weights: Tensor | None) -> Judgement:
        assert self._real is not None, "judge_events before begin"
        (real, real_weights), self._real = self._real, None
        return judge(self.discriminator.networks, real, fake, weights, real_weights)

    def judge(self, net: nn.Sequential, real: Tensor, fake: Tensor) -> Judgement:
        return judge([net], real, fake)

    def discriminator_updated(self) -> None:
        pass

    def real_rng_state(self) -> Tensor:
        return self.real_rng.get_state()

    def discard(self) -> None:
        pass


def accel_enabled() -> bool:
    """Whether :mod:`qcf_studio.engine.accel` may be used: not with ``QCF_ACCEL=0``."""
    return os.environ.get(ACCEL_ENV, "1").strip() != "0"


def _accel() -> ModuleType | None:
    if not accel_enabled():
        return None
    try:
        import qcf_studio.engine.accel as accel
    except ImportError:  # deleted, or not shipped
        return None
    return accel


def make_accelerator(
    discriminator: Discriminator,
    draw_real: Callable[[], RealBatch],
    real_rng: torch.Generator,
    device: torch.device,
    pass_threads: bool | None = None,
) -> Accelerator:
    """The best accelerator at hand for a trainer of ``discriminator`` on ``device``.

    ``draw_real()`` draws a batch of measured events from ``real_rng``. ``pass_threads``: run the
    discriminator's pass on helper threads (:class:`qcf_studio.engine.accel.threads.PassThreads`); ``None``: where
    they help (the CPU with more than one torch thread).
    """
    accel = _accel()
    if accel is None:
        if pass_threads:
            raise ValueError(f"pass_threads needs engine.accel (off with {ACCEL_ENV}=0, or not installed)")
        return PlainAccelerator(discriminator, draw_real, real_rng)
    made: Accelerator = accel.Accelerated(discriminator, draw_real, real_rng, device, pass_threads)
    return made


def tune_process() -> bool:
    """Keep freed heap memory in this process (:mod:`qcf_studio.engine.accel.malloc`), where the accelerator is in use;
    ``True`` if that took effect."""
    if _accel() is None:
        return False
    from qcf_studio.engine.accel.malloc import retain_freed_memory

    return retain_freed_memory()
