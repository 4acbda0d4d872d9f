"""Regenerate the sample data from the sample specs (reproducible: the specs and seeds below fix them).

Run with ``make sample-data``. Writes ``closure-1d-small.nc`` (20 000 events per observable), which
``closure-1d-measured.yaml`` fits as if it were measured data, and ``closure-1d-sweights.root``, which
``closure-1d-sweights.yaml`` fits by maximum likelihood: proxy1d events in two TTrees with unequal counts and
background-subtracted weights (a background sample at +1 and a second one at −1, as sWeights give), the
cross sections in the spec.
"""

from pathlib import Path

import numpy as np

from qcf_studio.app.cli.commands import main

HERE = Path(__file__).resolve().parent


def write_sweighted_root(path: Path, seed: int = 21) -> None:
    """proxy1d signal events (20 000 for sigma1, 12 000 for sigma2) plus 4 000 background events at weight +1
    and 4 000 more at −1 per observable, in the trees ``proton`` and ``neutron`` (branches ``xB``, ``sw``)."""
    import uproot

    from qcf_studio.engine.data.pseudodata import make_pseudo_data
    from qcf_studio.engine.problems import get_problem

    p = get_problem("proxy1d")
    signal = make_pseudo_data(p, np.asarray(p.truth), 20_000, seed=seed)
    rng = np.random.default_rng(seed)
    with uproot.recreate(path) as f:
        for tree, o, n in (("proton", 0, 20_000), ("neutron", 1, 12_000)):
            background = 0.1 + 0.9 * rng.beta(1.0, 3.0, (2, 4000))  # falling towards x = 1, as the signal
            x = np.concatenate([signal.events[o, :n, 0], background[0], background[1]])
            sw = np.concatenate([np.ones(n), np.ones(4000), -np.ones(4000)]).astype(np.float32)
            f.mktree(tree, {"xB": np.float64, "sw": np.float32}).extend({"xB": x, "sw": sw})
    xsec = ", ".join(f"{n}: [{v:.6g}, {e:.3g}]" for n, v, e in zip(p.observable_names, signal.xsec, signal.xsec_err))
    print(f"{path}: the cross sections for the spec's problem.xsec: {{{xsec}}}")


if __name__ == "__main__":
    write_sweighted_root(HERE / "closure-1d-sweights.root")
    raise SystemExit(main(["data", str(HERE / "closure-1d-small.yaml"), "--out", str(HERE / "closure-1d-small.nc")]))
