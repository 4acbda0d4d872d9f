"""Device handling on the CPU: where the trainer's tensors live, device choice, portable checkpoints.

No GPU is available to these tests. What they can check here: an explicit device reaches every
tensor of training; no step creates a tensor on torch's default device instead of its inputs'
(run under a ``meta`` default device, any such tensor breaks the step, as it would on a GPU);
``cluster.device`` resolves as documented; checkpoints carry only CPU tensors and load with a
``map_location``, so a member can change device between checkpoint and resume.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qcf_studio.engine.data.pseudodata import make_pseudo_data
from qcf_studio.engine.detector import build_detector
from qcf_studio.engine.gan.trainer import GANTrainer, TrainingConfig
from qcf_studio.engine.problems import get_problem, problem_kinds
from qcf_studio.engine.run.devices import cuda_index, resolve_device
from qcf_studio.engine.run.parallel import backend_for
from qcf_studio.engine.samplers import SAMPLERS

# noise_final and average_last: the bootstrap's shrinking noise and averaged point estimate are exercised too
SMALL = TrainingConfig(steps=4, batch_params=8, events_per_param=16, grid_points=32, noise_final=0.0, average_last=0.5)
EFFECTS = {"resolution": 0.02, "acceptance": {"max": 0.9}, "background": {"fraction": 0.1}}


def small_trainer(kind: str, device: str = "cpu", detector: dict | None = None) -> GANTrainer:
    problem = get_problem(kind)
    data = make_pseudo_data(problem, np.asarray(problem.truth), 2000, seed=1)
    chain = build_detector(detector or {}, problem.domain, coord_axis=True)
    return GANTrainer(problem, data, SMALL, seed=0, detector=chain, device=device)


def trainer_tensors(t: GANTrainer) -> dict[str, torch.Tensor]:
    """Every tensor the trainer holds: networks, detector buffers, data, grids, labels, optimiser states."""
    modules = {
        "generator": t.generator,
        "discriminator": t.discriminator,
        "xsec_discriminator": t.xsec_discriminator,
        "detector": t.detector,
    }
    out = {}
    for name, module in modules.items():
        if module is not None:
            out.update({f"{name}.{k}": v for k, v in [*module.named_parameters(), *module.named_buffers()]})
    out.update({f"grids.{i}": g for i, g in enumerate(t.grids)})
    out.update({f"qcf_grids.{i}": g for i, g in enumerate(t.qcf_grids)})
    for name in ("real", "real_features", "real_weights", "xsec", "xsec_err", "labels", "norm_mask", "param_sum"):
        if getattr(t, name) is not None:
            out[name] = getattr(t, name)
    for name, opt in (("opt_g", t.opt_g), ("opt_d", t.opt_d)):
        out.update(
            {
                f"{name}.{i}.{k}": v
                for i, state in enumerate(opt.state.values())
                for k, v in state.items()
                if isinstance(v, torch.Tensor)
            }
        )
    return out


def test_a_trainer_on_an_explicit_device_keeps_every_tensor_there():
    trainer = small_trainer("proxy1d", device="cpu", detector=EFFECTS)
    trainer.train_step()
    tensors = trainer_tensors(trainer)
    assert {"real", "xsec", "labels", "norm_mask", "grids.0", "opt_g.0.exp_avg", "detector.effects.1.turn_on"} <= set(
        tensors
    )
    assert {k: v.device.type for k, v in tensors.items() if v.device.type != "cpu"} == {}
    assert trainer.device == torch.device("cpu") and trainer.rng.device == torch.device("cpu")
    float64 = {k for k, v in tensors.items() if v.dtype == torch.float64 and not k.startswith("detector")}
    assert float64 == {"param_sum"}  # the running parameter average; training itself is float32
    p = trainer.predict(n_params=20, events_per_param=5)
    assert all(isinstance(v, np.ndarray) for v in p.values())


@pytest.mark.parametrize("kind", problem_kinds())
def test_training_creates_no_tensor_on_the_default_device(kind):
    """With torch's default device set to ``meta``, a tensor made without ``device=`` (a CUDA trainer's
    CPU tensor) lands there and breaks the step; every problem, sampler and detector effect passes."""
    trainer = small_trainer(kind, detector=EFFECTS)
    with torch.device("meta"):
        metrics = [trainer.train_step()]
        trainer.predict(n_params=20, events_per_param=5)  # drawn from the generator
        metrics += [trainer.train_step() for _ in range(3)]
        assert trainer.point_estimate() is not None
        trainer.predict(n_params=20, events_per_param=5)  # at the averaged point estimate
        trainer.snapshot()
    assert all(np.isfinite(list(m.values())).all() for m in metrics)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_create_no_tensor_on_the_default_device(name):
    sampler = SAMPLERS[name]
    dims = sampler.dims or 3
    grids = tuple(torch.linspace(0.01, 0.99, 17) for _ in range(dims))
    theta = torch.tensor([0.5, 2.0], requires_grad=True)
    mesh = torch.meshgrid(*grids, indexing="ij")
    density = (mesh[0] ** theta[0] * (1 - mesh[0]) ** theta[1])[None].expand(2, *mesh[0].shape)
    uniforms = torch.rand((2, 4096, sampler.n_uniforms(dims)), generator=torch.Generator().manual_seed(0))
    with torch.device("meta"):
        events, integral = sampler.sample(density, grids, uniforms)
        (events.sum() + integral.sum()).backward()
    assert events.device.type == "cpu" and torch.isfinite(theta.grad).all()


def test_the_learned_detector_creates_no_tensor_on_the_default_device():
    chain = build_detector(
        {"resolution": 0.05, "surrogate": {"events": 1000, "epochs": 1}}, [(0.1, 1.0)], coord_axis=True
    )
    x = torch.linspace(0.2, 0.9, 64, requires_grad=True)
    with torch.device("meta"):
        events, _ = chain(x[None, :, None], None, torch.Generator().manual_seed(0))
        events.sum().backward()
    assert events.device.type == "cpu" and torch.isfinite(x.grad).all()


def test_cpu_and_auto_resolve_to_the_cpu_without_cuda():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a worker without CUDA")
def test_cuda_without_cuda_names_the_worker_and_the_field():
    with pytest.raises(
        RuntimeError,
        match=r"worker tcp://10\.0\.0\.7:4000: cluster\.device is cuda but this "
        r"worker has no CUDA device",
    ):
        resolve_device("cuda", "tcp://10.0.0.7:4000", "gpu-1")


@pytest.mark.parametrize(
    ("name", "count", "index"),
    [
        (0, 2, 0),
        (1, 2, 1),
        (3, 2, 1),
        ("2", 4, 2),
        ("gpu-3", 4, 3),
        ("node7-5", 4, 1),
        ("tcp://127.0.0.1:40123", 4, 0),
        ("tcp://node-1:4000", 2, 0),
        ("worker", 2, 0),
        (None, 8, 0),
        (5, 1, 0),
    ],
)
def test_a_worker_picks_its_gpu_from_its_name(name, count, index):
    assert cuda_index(name, count) == index


def test_ranks_share_with_nccl_on_cuda_and_gloo_on_the_cpu():
    assert backend_for(torch.device("cuda", 1)) == "nccl"
    assert backend_for(torch.device("cpu")) == "gloo"


_TAG_STORAGES_AS: list[str] = []  # while set, torch.save records every CPU storage at this location


def _tagger(storage) -> str | None:
    return _TAG_STORAGES_AS[0] if _TAG_STORAGES_AS and storage.device.type == "cpu" else None


torch.serialization.register_package(1, _tagger, lambda storage, location: None)  # inert unless tagging


def as_gpu_checkpoint(blob: bytes) -> bytes:
    """``blob`` as a GPU worker would write it without moving tensors to the CPU first: every storage
    recorded on ``cuda:0`` and the random state of a CUDA generator (a different size than the CPU's)."""
    import io

    state = torch.load(io.BytesIO(blob), weights_only=True)
    state.update(rng=torch.arange(16, dtype=torch.uint8), rng_device="cuda")
    buf = io.BytesIO()
    _TAG_STORAGES_AS.append("cuda:0")
    try:
        torch.save(state, buf)
    finally:
        _TAG_STORAGES_AS.clear()
    return buf.getvalue()


def test_a_checkpoint_taken_on_a_gpu_resumes_on_a_cpu_trainer():
    import io

    from qcf_studio.engine.gan.checkpoint import load_checkpoint, save_checkpoint

    first = small_trainer("proxy1d")
    for _ in range(3):
        first.train_step()
    blob = as_gpu_checkpoint(save_checkpoint(first, {"step": [3.0]}))
    if not torch.cuda.is_available():  # the blob really asks for CUDA: only map_location makes it loadable here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(io.BytesIO(blob), weights_only=True)

    resumed, again = small_trainer("proxy1d"), small_trainer("proxy1d")
    assert load_checkpoint(resumed, blob) == {"step": [3.0]} and resumed.step == 3
    load_checkpoint(again, blob)
    for a, b in [
        (first.generator, resumed.generator),
        (first.discriminator, resumed.discriminator),
        (first.xsec_discriminator, resumed.xsec_discriminator),
    ]:
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert all(torch.equal(x, y) for x, y in zip(trainer_tensors(first).values(), trainer_tensors(resumed).values()))
    assert all(v.device.type == "cpu" for v in trainer_tensors(resumed).values())
    # The CUDA random state cannot drive a CPU generator: both resumes reseed alike from it.
    assert resumed.train_step() == again.train_step()
