"""``qcf-studio bench``: runs the benchmark the command line names and prints its numbers (one JSON line with
``--json``). The benchmarks on Dask workers (``ensemble``, ``dp``, ``gan --members``, ``campaign``) are imported
only when asked for, so that ``bench sampler|gan`` never load Dask."""

from __future__ import annotations

import json
from typing import Any

import torch

from qcf_studio.benchmarks.bench import bench_gan, bench_sampler
from qcf_studio.engine.run.devices import resolve_device

__all__ = ["run"]


def run(args: Any) -> int:
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.what == "sampler":
        out = bench_sampler(args.problem, args.events, repeats=args.repeats, device=device)
    elif args.what == "gan" and args.members is None:
        out = bench_gan(args.problem, args.events, args.width, args.depth, repeats=args.repeats, device=device)
    elif args.what == "campaign":  # on LocalClusters
        from qcf_studio.benchmarks.campaign import bench_campaign

        out = bench_campaign(args.problem, args.method, args.replicas, args.steps, args.ranks)
    else:  # on a LocalCluster: imports Dask
        from qcf_studio.benchmarks.scaleout import bench_data_parallel, bench_ensemble, bench_gan_members

        if args.what == "gan":
            out = bench_gan_members(
                args.problem, args.events, args.members, args.threads, args.width, args.depth, args.window, args.warmup
            )
        elif args.what == "ensemble":
            out = bench_ensemble(args.problem, args.members or 2, args.steps, args.device)
        else:
            out = bench_data_parallel(args.problem, args.ranks, args.steps, args.schedule, device=args.device)
    out.update({"threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(device)})
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
    return 0
