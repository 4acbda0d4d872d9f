"""The discriminator pass's native (C++) block: the same numbers as the Python block, bit for bit,
a fallback for what it does not take, and a clear warning where it cannot be built.

The native block must build here (gcc and ninja are part of the set-up): these tests fail, rather
than skip, if it does not, unless ``QCF_NATIVE=0`` switches it off on purpose.
"""

from __future__ import annotations

import pytest
import torch

import qcf_studio.engine.accel.blocks as blocks
import qcf_studio.engine.accel.handpass as handpass
import qcf_studio.engine.accel.native as native
from qcf_studio.engine.gan.models import mlp

pytestmark = pytest.mark.skipif(not native.native_enabled(), reason="QCF_NATIVE=0: native code switched off")


def _pass(net, real, fake, weights, block):
    part = handpass.NetPass(net, real, None, 700)
    part.add_generated(fake, weights)
    ws: dict[str, torch.Tensor] = {}
    for b in range(len(part.blocks)):
        part.run(b, ws, block, 1)
    result = part.result()
    return [result.logits, result.grad_inputs] + [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize(
    ("n_in", "width", "depth", "weighted"), [(2, 64, 2, False), (3, 32, 3, True), (1, 16, 1, True)]
)
def test_the_native_block_gives_the_python_blocks_numbers_bit_for_bit(n_in, width, depth, weighted):
    block = native.pass_block()
    assert block is not None, "the native block did not build (see the warning)"
    torch.manual_seed(width)
    net = mlp(n_in, width, depth, 1)
    real, fake = 2.0 * torch.randn(1500, n_in), 2.0 * torch.randn(1300, n_in)
    fake[:50] = 0.0  # rows at the origin: first-layer pre-activations equal to the biases
    weights = torch.rand(1300) + 0.5 if weighted else None

    def native_block(
        weights, biases, slopes, w_out, b_out, w_in_t, rows, row_weights, target, grads, logits, grad_inputs, ws, split
    ):
        block(weights, biases, slopes, w_out, b_out, w_in_t, rows, row_weights, target, grads, logits, grad_inputs)

    expected = _pass(net, real, fake, weights, blocks.pass_block)
    got = _pass(net, real, fake, weights, native_block)
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    assert blocks.pass_block_kind() == "native"


def test_rows_the_native_block_does_not_take_go_to_the_other_block():
    torch.manual_seed(0)
    net = mlp(2, 16, 2, 1).double()
    real, fake = torch.randn(400, 2, dtype=torch.float64), torch.randn(300, 2, dtype=torch.float64)
    expected = _pass(net, real, fake, None, blocks.pass_block)
    got = _pass(net, real, fake, None, blocks.fast_block())  # float64: not the native block's
    assert all(torch.equal(a, b) for a, b in zip(expected, got))


def test_native_code_can_be_switched_off_and_a_failed_build_says_why(monkeypatch):
    import torch.utils.cpp_extension as cpp_extension

    native.pass_block.cache_clear()
    try:
        monkeypatch.setenv("QCF_NATIVE", "0")
        assert native.pass_block() is None
        native.pass_block.cache_clear()
        monkeypatch.delenv("QCF_NATIVE")

        def broken(*args, **kwargs):
            raise RuntimeError("Error building extension 'qcf_pass_block': g++ not found")

        monkeypatch.setattr(cpp_extension, "load", broken)
        expected = r"without its native block: building pass_block\.cpp failed .*g\+\+ not found"
        with pytest.warns(RuntimeWarning, match=expected):
            assert native.pass_block() is None
    finally:
        native.pass_block.cache_clear()  # later tests load the real one again


def test_a_build_lock_left_by_an_interrupted_build_is_removed_and_the_block_loads(tmp_path):
    """torch's build lock outlives a killed build, and every later load would wait on it forever."""
    import os
    import time
    from pathlib import Path

    from torch.utils.cpp_extension import get_default_build_root

    name = native.extension_name(Path(native.__file__).with_name("pass_block.cpp"))
    fresh = tmp_path / "py311_cpu" / name / "lock"
    fresh.parent.mkdir(parents=True)
    fresh.touch()  # a build under way: left alone
    native._remove_stale_locks(tmp_path, name)
    assert fresh.exists()

    native.pass_block.cache_clear()
    assert native.pass_block() is not None  # built (make install builds it)
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    folders = native.build_folders(root, name)
    assert folders
    stale = folders[0] / "lock"
    stale.touch()
    old = time.time() - native.STALE_LOCK_SECONDS - 60
    os.utime(stale, (old, old))
    native.pass_block.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="interrupted build"):
            assert native.pass_block() is not None
        assert not stale.exists()
    finally:
        stale.unlink(missing_ok=True)
        native.pass_block.cache_clear()


def test_a_young_build_lock_is_waited_on_for_a_while_then_the_python_block_is_used(monkeypatch):
    """A build killed a minute ago leaves a lock too young to be called stale: a load waits LOCK_WAIT_SECONDS
    for it, then goes on with the Python block instead of hanging in torch's wait."""
    import os
    import time
    from pathlib import Path

    from torch.utils.cpp_extension import get_default_build_root

    name = native.extension_name(Path(native.__file__).with_name("pass_block.cpp"))
    native.pass_block.cache_clear()
    assert native.pass_block() is not None  # built (make install builds it)
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    lock = native.build_folders(root, name)[0] / "lock"
    monkeypatch.setattr(native, "LOCK_WAIT_SECONDS", 1.0)
    lock.touch()
    native.pass_block.cache_clear()
    try:
        started = time.monotonic()
        with pytest.warns(RuntimeWarning, match="held its lock for over 1 s"):
            assert native.pass_block() is None
        assert time.monotonic() - started < 30 and lock.exists()  # not removed: it may be a live build
    finally:
        lock.unlink(missing_ok=True)
        native.pass_block.cache_clear()
    assert native.pass_block() is not None  # the lock gone, the block loads


def test_each_torch_installation_builds_its_own_copy(monkeypatch, tmp_path):
    """Two venvs (a checkout's and a fresh clone's) built into one folder would rebuild it back and forth:
    the folder's name follows the torch it is built against as well as the source."""
    from pathlib import Path

    import torch

    source = Path(native.__file__).with_name("pass_block.cpp")
    here = native.extension_name(source)
    assert native.extension_name(source) == here  # stable for one source and one torch
    edited = tmp_path / "pass_block.cpp"
    edited.write_bytes(source.read_bytes() + b"\n")
    assert native.extension_name(edited) != here
    monkeypatch.setattr(torch, "__file__", str(tmp_path / "other-venv" / "torch" / "__init__.py"))
    assert native.extension_name(source) != here
