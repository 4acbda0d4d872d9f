"""``python -m qcf_studio.engine.accel.native``: build the native parts now (``make install`` does), and say how it
went."""

from __future__ import annotations

import sys
import time

from qcf_studio.engine.accel.native import pass_block


def main() -> int:
    start = time.perf_counter()
    block = pass_block()
    if block is None:
        print(
            "qcf_studio.engine.accel.native: not built; the discriminator pass uses its TorchScript block (same "
            "numbers, slower)",
            file=sys.stderr,
        )
    else:
        print(
            "qcf_studio.engine.accel.native: the discriminator pass block is ready "
            f"({time.perf_counter() - start:.1f} s)"
        )
    return 0  # a missing compiler slows training down; it does not stop the installation


if __name__ == "__main__":
    sys.exit(main())
