"""The speed machinery is removable: the plain step (autograd, torch's Adam) trains to the same numbers up to
floating-point rounding, ``QCF_ACCEL=0`` chooses it, and with ``qcf_studio.engine.accel`` gone the engine still trains.
Each speed-up is pinned bit for bit to its own reference in test_accel_threads, test_native and test_optim,
and the hand-written pass to autograd in test_models."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from qcf_studio.engine.data.pseudodata import make_pseudo_data
from qcf_studio.engine.detector import Acceptance, DetectorChain
from qcf_studio.engine.gan.accelerator import ACCEL_ENV, PlainAccelerator
from qcf_studio.engine.gan.trainer import GANTrainer, TrainingConfig
from qcf_studio.engine.problems import get_problem


def _trainer(kind: str, acceptance: bool = False) -> GANTrainer:
    problem = get_problem(kind)
    detector = DetectorChain([Acceptance(0.2, 0.1, dims=problem.event_dims, coord_axis=True)]) if acceptance else None
    data = make_pseudo_data(problem, np.asarray(problem.truth), 3000, seed=1)
    # cross sections judged from the first step (proxy1d has normalisations)
    config = TrainingConfig(steps=8, batch_params=4, events_per_param=100, grid_points=24, xsec_start=0.0)
    return GANTrainer(problem, data, config, seed=5, detector=detector)


def _weights(trainer: GANTrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for m in (trainer.generator, trainer.discriminator) for p in m.parameters()]


@pytest.mark.parametrize(("kind", "acceptance"), [("proxy1d", True), ("multiset2d", False)])
def test_the_plain_step_trains_to_the_accelerated_numbers(kind, acceptance, monkeypatch):
    # proxy1d: acceptance weights and cross sections, one network; multiset2d: a network per data set.
    fast = _trainer(kind, acceptance)
    assert fast.accelerator.name.startswith("accel (")
    monkeypatch.setenv(ACCEL_ENV, "0")
    plain = _trainer(kind, acceptance)
    assert isinstance(plain.accelerator, PlainAccelerator)
    assert not plain.opt_g.param_groups[0]["fused"]  # torch's own Adam, called through step()
    start = _weights(plain)
    # The discriminator's accuracy counts events on either side of logit 0: a rounding difference may put one
    # event (1/n of the accuracy) on the other side. Losses and parameters are continuous and agree closely.
    one_event = 1.0 / plain.labels.shape[0]
    for _ in range(8):
        a, b = fast.train_step(), plain.train_step()
        assert a.keys() == b.keys()
        for key in a:
            if key.startswith("d_acc"):
                assert abs(a[key] - b[key]) <= 1.5 * one_event, key
            else:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    # Adam steps a weight whose gradient is near 0 by about its learning rate whatever the gradient's rounding,
    # so single weights may differ by a step; each network as a whole must land where the other path took it,
    # within 1% of how far training moved it.
    fast_w, plain_w, n_g = _weights(fast), _weights(plain), len(list(plain.generator.parameters()))
    for name, part in (("generator", slice(0, n_g)), ("discriminator", slice(n_g, None))):
        apart = torch.cat([(x - y).flatten() for x, y in zip(fast_w[part], plain_w[part])]).norm()
        moved = torch.cat([(y - s).flatten() for y, s in zip(plain_w[part], start[part])]).norm()
        assert moved > 0 and apart <= 1e-2 * moved, (name, float(apart), float(moved))
    assert any(not torch.equal(x, y) for x, y in zip(fast_w, plain_w))  # two paths, really


def test_pass_threads_are_refused_on_the_plain_path(monkeypatch):
    monkeypatch.setenv(ACCEL_ENV, "0")
    problem = get_problem("proxy1d")
    data = make_pseudo_data(problem, np.asarray(problem.truth), 500, seed=1)
    with pytest.raises(ValueError, match="pass_threads needs engine.accel"):
        GANTrainer(problem, data, TrainingConfig(steps=2), pass_threads=True)


def test_without_the_accel_package_the_engine_trains_and_checkpoints_on_the_plain_path(tmp_path):
    """As if ``engine/accel`` were deleted: its import fails, and training, a checkpoint's resume and the heap
    set-up all go on without it."""
    code = """
import json, sys
sys.modules["qcf_studio.engine.accel"] = None  # import engine.accel now raises ImportError, as with the folder deleted
import numpy as np, torch
from qcf_studio.engine.gan.accelerator import tune_process
from qcf_studio.engine.gan.checkpoint import load_checkpoint, save_checkpoint
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.data.pseudodata import make_pseudo_data
from qcf_studio.engine.gan.trainer import GANTrainer, TrainingConfig
problem = get_problem("proxy1d")
data = make_pseudo_data(problem, np.asarray(problem.truth), 2000, seed=1)
config = TrainingConfig(steps=6, batch_params=4, events_per_param=100, grid_points=24, xsec_start=0.0)
def make():
    return GANTrainer(problem, data, config, seed=3)
straight = make()
metrics = [straight.train_step() for _ in range(6)]
first = make()
for _ in range(3):
    first.train_step()
resumed = make()
load_checkpoint(resumed, save_checkpoint(first, {}))
for _ in range(3):
    resumed.train_step()
same = all(torch.equal(a, b) for a, b in zip(straight.generator.parameters(), resumed.generator.parameters()))
print(json.dumps({"name": straight.accelerator.name, "tuned": tune_process(), "resumed_exactly": same,
                  "loss_d": metrics[-1]["loss_d"], "accel_loaded": any(m.startswith("qcf_studio.engine.accel.")
                  for m in sys.modules)}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {**out, "name": "plain", "tuned": False, "resumed_exactly": True, "accel_loaded": False}
    assert 0.5 < out["loss_d"] < 2.5  # a GAN's discriminator loss (ln 4 = 1.39 at equilibrium), trained


def test_bench_gan_says_which_path_ran(monkeypatch, capsys):
    from qcf_studio.app.cli.commands import main

    monkeypatch.setenv(ACCEL_ENV, "0")
    assert main(["bench", "gan", "--problem", "proxy1d", "--events", "1000", "--repeats", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accelerator"] == "plain" and out["pass_block"] == "autograd" and out["pass_threads"] == 0
    assert out["events_per_second"] > 0
