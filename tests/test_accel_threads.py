"""The discriminator pass on helper threads: the same numbers as one thread's pass, exact checkpoints
with a pass begun early, and no helper left waiting."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import qcf_studio.engine.accel.handpass as handpass
from qcf_studio.engine.accel.threads import PassThreads
from qcf_studio.engine.data.pseudodata import make_pseudo_data
from qcf_studio.engine.detector import Acceptance, DetectorChain
from qcf_studio.engine.gan.checkpoint import load_checkpoint, save_checkpoint
from qcf_studio.engine.gan.trainer import GANTrainer, TrainingConfig
from qcf_studio.engine.problems import get_problem

pytestmark = pytest.mark.skipif(not PassThreads.available(), reason="TorchScript cannot compile the pass here")


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 96 rows, so that the small test batches make several blocks of each kind."""
    monkeypatch.setattr(handpass, "PASS_BLOCK_ROWS_PER_THREAD", 96)


def _trainer(kind: str, pass_threads: bool | None, acceptance: bool = False) -> GANTrainer:
    problem = get_problem(kind)
    dims = problem.event_dims
    detector = DetectorChain([Acceptance(0.2, 0.1, dims=dims, coord_axis=True)]) if acceptance else None
    data = make_pseudo_data(problem, np.asarray(problem.truth), 3000, seed=1)
    config = TrainingConfig(steps=20, batch_params=4, events_per_param=100, grid_points=24)
    return GANTrainer(problem, data, config, seed=5, detector=detector, pass_threads=pass_threads)


def _state(trainer: GANTrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for m in (trainer.generator, trainer.discriminator) for p in m.parameters()]


@pytest.mark.parametrize(("kind", "acceptance"), [("proxy1d", True), ("multiset2d", False)])
def test_pass_threads_give_the_numbers_of_one_thread(kind, acceptance, two_threads, small_blocks):
    # proxy1d with acceptance weights and cross sections (one network); multiset2d: a network per
    # observable. One thread's pass with the same blocks must agree to the last bit.
    threaded = _trainer(kind, True, acceptance)
    assert threaded.accelerator.helpers == 1
    single = _trainer(kind, False, acceptance)
    for _ in range(4):
        a = threaded.train_step()
        torch.set_num_threads(1)  # the blocks and sums of a pass thread
        try:
            b = single.train_step()
        finally:
            torch.set_num_threads(2)
        assert a == b
    assert all(torch.equal(x, y) for x, y in zip(_state(threaded), _state(single)))
    assert torch.get_num_threads() == 2  # a step gives back the threads it borrowed


def test_a_checkpoint_with_a_pass_begun_early_resumes_exactly(two_threads, small_blocks):
    straight = _trainer("proxy2d", True)
    for _ in range(6):
        straight.train_step()
    first = _trainer("proxy2d", True)
    for _ in range(3):
        first.train_step()
    assert first.accelerator._prefetched is not None  # step 4's real blocks are under way
    blob = save_checkpoint(first, {})
    first.train_step()  # the early batch is used, not drawn again
    resumed = _trainer("proxy2d", True)
    load_checkpoint(resumed, blob)
    for _ in range(3):
        resumed.train_step()
    assert all(torch.equal(x, y) for x, y in zip(_state(straight), _state(resumed)))


def test_a_pass_never_finished_leaves_no_helper_waiting(two_threads):
    trainer = _trainer("proxy1d", True)
    trainer.train_step()
    pending = trainer.accelerator._prefetched
    assert pending is not None
    trainer.discard_prefetch()
    for future in pending._futures:
        future.result(timeout=10)  # the helpers return once the real blocks are done
    trainer.accelerator.pass_threads.close()


def test_pass_threads_are_refused_where_they_cannot_run():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(ValueError, match="pass_threads needs .* more than one torch thread"):
            _trainer("proxy1d", True)
        assert _trainer("proxy1d", None).accelerator.helpers == 0  # the default: not with one thread
    finally:
        torch.set_num_threads(before)


def test_finishing_a_pass_does_not_wait_for_other_work_queued_on_the_helper():
    # The trainer queues the next real batch on the helper before finishing a pass; the helper call
    # that finish() queues behind it has no block left to do and must not hold the caller up.
    from qcf_studio.engine.gan.models import mlp

    torch.manual_seed(0)
    net = mlp(2, 16, 2, 1)
    real, fake = torch.randn(500, 2), torch.randn(400, 2)
    threads = PassThreads(1)
    release = threading.Event()
    try:
        pending = threads.begin([net], [real], [None], block_rows=96)
        blocker = threads.submit(release.wait, 10)  # queued behind the helper's blocks
        passes = pending.finish([fake], [None], {})
        assert not blocker.done()  # finish() returned while the helper is still held
        grads = [p.grad.clone() for p in net.parameters()]
    finally:
        release.set()
        threads.close()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = handpass.split_pass(net, real, fake, block_rows=96)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(passes[0].logits, single.logits) and torch.equal(passes[0].grad_inputs, single.grad_inputs)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, net.parameters()))
