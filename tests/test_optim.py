"""qcf_studio.engine.accel.optim.adam_step: the same update as the fused Adam's own step(), with its state."""

import pytest
import torch

from qcf_studio.engine.accel.optim import adam_step
from qcf_studio.engine.gan.models import mlp


def _train(step, steps=12, **adam):
    torch.manual_seed(0)
    net = mlp(2, 16, 2, 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.5, 0.999), fused=True, **adam)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    x = torch.randn(64, 2)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        net(x).pow(2).mean().backward()
        step(opt)
        sched.step()
    return net, opt


@pytest.mark.parametrize("adam", [{}, {"weight_decay": 0.01}, {"amsgrad": True}])
def test_adam_step_is_bit_identical_to_step(adam):
    ref_net, ref_opt = _train(lambda o: o.step(), **adam)
    net, opt = _train(adam_step, **adam)
    for p, q in zip(ref_net.parameters(), net.parameters()):
        assert torch.equal(p, q)
    for a, b in zip(ref_opt.state_dict()["state"].values(), opt.state_dict()["state"].values()):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert float(opt.state_dict()["state"][0]["step"]) == 12


def test_adam_step_resumes_from_a_state_dict():
    """After a checkpoint (state dicts loaded into a new network, optimiser and scheduler) the direct
    call continues the trajectory of step() exactly."""
    ref_net, _ = _train(lambda o: o.step(), steps=10)
    net, opt = _train(adam_step, steps=4)
    sched_state = {"last_epoch": 4, "_step_count": 5, "_last_lr": [1e-2 * 0.9**4], "gamma": 0.9, "base_lrs": [1e-2]}
    torch.manual_seed(1)
    net2 = mlp(2, 16, 2, 1)
    net2.load_state_dict(net.state_dict())
    opt2 = torch.optim.Adam(net2.parameters(), lr=1e-2, betas=(0.5, 0.999), fused=True)
    opt2.load_state_dict(opt.state_dict())
    sched2 = torch.optim.lr_scheduler.ExponentialLR(opt2, 0.9)
    sched2.load_state_dict({**sched2.state_dict(), **sched_state})
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.9**4)
    torch.manual_seed(0)
    mlp(2, 16, 2, 1)
    x = torch.randn(64, 2)
    for _ in range(6):
        opt2.zero_grad(set_to_none=True)
        net2(x).pow(2).mean().backward()
        adam_step(opt2)
        sched2.step()
    assert all(torch.equal(p, q) for p, q in zip(ref_net.parameters(), net2.parameters()))
