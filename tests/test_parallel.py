"""Generator-gradient sharing (torch.distributed, gloo) and checkpoints, without Dask.

Ranks run as threads of this process here (gloo over loopback TCP); on a cluster they are Dask
worker processes (tests/test_scaleout.py). The arithmetic is the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist

from qcf_studio.engine.gan.checkpoint import MemoryCheckpointStore, load_checkpoint, save_checkpoint
from qcf_studio.engine.run.parallel import GradientSharing, ShareSchedule
from qcf_studio.engine.run.runner import make_trainer, measured_data, train_member
from qcf_studio.engine.run.sinks import HistorySink
from tests.conftest import small_spec


def run_ranks(world: int, body: Callable[[int, GradientSharing], object], schedule=ShareSchedule(), timeout=20.0):
    """Run ``body(rank, sharing)`` on ``world`` threads sharing one store; return results (or exceptions) by rank."""
    master = dist.TCPStore("127.0.0.1", 0, world, True, wait_for_workers=False)
    out: dict[int, object] = {}

    def target(rank: int) -> None:
        store = master if rank == 0 else dist.TCPStore("127.0.0.1", master.port, world, False)
        try:
            out[rank] = body(rank, GradientSharing(store, rank, world, schedule, timeout))
        except Exception as e:  # noqa: BLE001 (the test inspects it)
            out[rank] = e

    threads = [threading.Thread(target=target, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return [out[r] for r in range(world)]


@pytest.fixture(scope="module")
def spec_and_data():
    spec = small_spec(steps=50)
    return spec, measured_data(spec)


def rank_trainer(spec, data, rank, world, sharing):
    trainer = make_trainer(spec, data, 0, "gan", shard=(rank, world))
    trainer.sharing = sharing
    sharing.broadcast_parameters(trainer.generator.parameters())
    return trainer


def weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_sync_step_leaves_every_rank_with_identical_generator_weights(spec_and_data):
    spec, data = spec_and_data

    def body(rank, sharing):
        trainer = rank_trainer(spec, data, rank, 2, sharing)
        before = weights(trainer.generator)
        trainer.train_step()
        return before, weights(trainer.generator), weights(trainer.discriminator), sharing.comm_seconds

    (b0, g0, d0, c0), (b1, g1, d1, c1) = run_ranks(2, body)
    assert same(b0, b1)  # rank 0's initial weights were broadcast
    assert not same(b0, g0)  # the step changed them ...
    assert same(g0, g1)  # ... identically on both ranks: the gradients were averaged
    assert not same(d0, d1)  # each rank has its own discriminator (and data shard)
    assert c0 > 0 and c1 > 0


def test_sync_gradient_is_the_mean_of_the_ranks_gradients(spec_and_data):
    spec, data = spec_and_data

    def body(rank, sharing):
        trainer = rank_trainer(spec, data, rank, 2, sharing)
        params = list(trainer.generator.parameters())
        for p in params:
            p.grad = torch.full_like(p, float(rank + 1))
        sharing.average_gradients(params)
        return [p.grad.clone() for p in params]

    g0, g1 = run_ranks(2, body)
    assert same(g0, g1) and all(torch.all(g == 1.5) for g in g0)


def test_grouped_schedule_shares_within_groups_every_step_and_across_groups_every_k(spec_and_data):
    spec, data = spec_and_data
    schedule = ShareSchedule("grouped", group_size=2, sync_every=2)

    def body(rank, sharing):
        trainer = rank_trainer(spec, data, rank, 4, sharing)
        trainer.train_step()
        after_1 = weights(trainer.generator)
        trainer.train_step()
        return after_1, weights(trainer.generator)

    r = run_ranks(4, body, schedule)
    assert same(r[0][0], r[1][0]) and same(r[2][0], r[3][0])  # groups {0, 1} and {2, 3} agree within
    assert not same(r[0][0], r[2][0])  # ... but drift apart between syncs
    assert all(same(r[0][1], r[k][1]) for k in (1, 2, 3))  # step 2: the leaders averaged and passed it on


def test_a_lost_rank_stops_its_peer_with_an_error_not_a_hang(spec_and_data):
    spec, data = spec_and_data

    def body(rank, sharing):
        trainer = rank_trainer(spec, data, rank, 2, sharing)
        trainer.train_step()
        if rank == 1:
            sharing.close()  # what a failing rank does before it raises
            return "left"
        t0 = time.perf_counter()
        try:
            trainer.train_step()
        except RuntimeError as e:
            return time.perf_counter() - t0, str(e)
        return "no error"

    r0, r1 = run_ranks(2, body, timeout=10.0)
    assert r1 == "left"
    assert isinstance(r0, tuple), r0
    # at the latest after the collective's timeout (10 s) and the rest of the step's own work, which a loaded
    # 2-core machine can stretch (10.02 s seen): a hang would take the test's whole timeout
    assert r0[0] < 15.0


def test_checkpoint_restores_training_exactly(spec_and_data):
    spec, data = spec_and_data
    straight = make_trainer(spec, data, 0, "gan")
    for _ in range(6):
        straight.train_step()

    first = make_trainer(spec, data, 0, "gan")
    for _ in range(3):
        first.train_step()
    blob = save_checkpoint(first, {"step": [3.0]})
    resumed = make_trainer(spec, data, 0, "gan")
    assert load_checkpoint(resumed, blob) == {"step": [3.0]}
    assert resumed.step == 3
    for _ in range(3):
        resumed.train_step()
    assert same(weights(straight.generator), weights(resumed.generator))
    assert same(weights(straight.discriminator), weights(resumed.discriminator))


def test_checkpoints_are_loaded_weights_only(spec_and_data):
    import io
    import pickle

    spec, data = spec_and_data
    trainer = make_trainer(spec, data, 0, "gan")

    class Payload:  # anything that is not tensors, numbers, strings or containers
        def __reduce__(self):
            return (print, ("code ran",))

    buf = io.BytesIO()
    torch.save({"format": 1, "payload": Payload()}, buf)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(trainer, buf.getvalue())


def test_member_resumes_from_its_store_and_keeps_its_history(spec_and_data):
    spec, data = spec_and_data
    spec.cluster.checkpoint_every = 20
    store = MemoryCheckpointStore()
    full = train_member(spec, 0, data, HistorySink(), checkpoints=store)
    assert store.steps == [20, 40] and full.resumed_from == 0

    # A rerun finds the checkpoint of step 40 and trains only the last 10 steps.
    rerun = train_member(spec, 0, data, HistorySink(), checkpoints=store)
    assert rerun.resumed_from == 40 and rerun.steps_done == 50
    assert rerun.metrics["step"] == full.metrics["step"]  # 10 .. 50, none twice
