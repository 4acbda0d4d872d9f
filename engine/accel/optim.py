"""A lean step for the trainers' fused Adam optimisers: the same update with less Python around it.

``torch.optim.Adam(fused=True).step()`` spends most of its time in Python: hooks, grouping the
tensors by device and dtype, checks: for the few small tensors of a GAN step, several times the
fused kernel's own time, and more while a pass thread computes beside it. :func:`adam_step` calls
the same kernel (``torch._fused_adam_``, which ``step()`` calls) with the optimiser's own state, so
checkpoints, schedulers and results are as with ``step()`` (bit-identical: see
``tests/test_optim.py``); anything it does not cover goes to ``step()``.
"""

from __future__ import annotations

import torch

__all__ = ["adam_step"]

_FUSED = getattr(torch, "_fused_adam_", None)


def adam_step(opt: torch.optim.Optimizer) -> None:
    """``opt.step()`` for a fused Adam with one parameter group on one device, faster.

    Falls back to ``opt.step()`` on the first step (the state is made there), for several groups,
    and for options the direct call does not handle (amsgrad, maximize, capturable, differentiable,
    decoupled weight decay, tensor hyper-parameters, several devices or dtypes).
    """
    groups = opt.param_groups
    g = groups[0]
    if (
        _FUSED is None
        or len(groups) != 1
        or not isinstance(opt, torch.optim.Adam)
        or not g.get("fused")
        or g["amsgrad"]
        or g["maximize"]
        or g["capturable"]
        or g["differentiable"]
        or g.get("decoupled_weight_decay", False)
        or isinstance(g["lr"], torch.Tensor)
    ):
        opt.step()
        return
    params = [p for p in g["params"] if p.grad is not None]
    if not params:
        return
    states = [s for s in (opt.state.get(p) for p in params) if s]  # none before Adam's first step
    first = params[0]
    if len(states) != len(params) or any(p.device != first.device or p.dtype != first.dtype for p in params):
        opt.step()
        return
    steps = [s["step"] for s in states]
    torch._foreach_add_(steps, 1)
    beta1, beta2 = g["betas"]
    _FUSED(
        params,
        [p.grad for p in params],
        [s["exp_avg"] for s in states],
        [s["exp_avg_sq"] for s in states],
        [],
        steps,
        amsgrad=False,
        lr=g["lr"],
        beta1=beta1,
        beta2=beta2,
        weight_decay=g["weight_decay"],
        eps=g["eps"],
        maximize=False,
        grad_scale=None,
        found_inf=None,
    )
