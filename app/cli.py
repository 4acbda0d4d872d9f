"""The ``qcf-studio`` command: serve, validate, data, run, export, bench.

Exit codes: 0 success; 1 a run that did not complete (stopped or failed); 2 invalid input (the
message names the file and field); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _fail(message: str, code: int = 2) -> int:
    print(f"qcf-studio: error: {message}", file=sys.stderr)
    return code


def _load(path: str):  # -> Spec, imported lazily so that `--help` is instant
    from engine.spec import load_spec

    return load_spec(path)


def cmd_validate(args: argparse.Namespace) -> int:
    spec = _load(args.spec)
    t = spec.training
    data = f"data {spec.problem.data}" if spec.problem.data else f"{spec.problem.events} events/observable"
    print(f"{args.spec}: valid — {spec.problem.kind}, {data}, {t.method} {t.steps} steps, "
          f"{spec.ensemble.members} member(s)")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from engine.results import write_netcdf_atomic
    from engine.runner import measured_data

    spec = _load(args.spec)
    ds = measured_data(spec).to_xarray()
    ds.attrs["spec"] = spec.to_yaml()
    ds.attrs["resolution"] = spec.detector.resolution
    print(write_netcdf_atomic(ds, args.out))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    spec = _load(args.spec)
    from app.cluster import close, connect
    from engine.distributed import start_run
    from engine.results import build_results, closure_summary, write_netcdf_atomic
    from engine.runner import measured_data, run_name

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        return _fail(f"--out {out_dir}: exists and is not a directory")
    data = measured_data(spec)
    workers = args.workers if args.workers is not None else spec.cluster.workers
    client = connect(args.scheduler, workers, spec.cluster.device)
    bar = ProgressBarSink(spec.training.steps * spec.ensemble.members, spec.name)
    code = 0
    try:
        try:
            handle = start_run(client, spec, data, sink=bar)
        except ValueError as e:  # the cluster cannot host the spec (data_parallel ranks, cuda without GPU workers)
            bar.close()
            return _fail(str(e))
        try:
            members = handle.results()
        except KeyboardInterrupt:
            bar.write("stopping: members finish their current step and keep what they produced ...")
            handle.stop()
            members = handle.results()
            code = 130
        bar.close()
        ds = build_results(spec, data, members, handle.wall_seconds, handle.reference())
        path = write_netcdf_atomic(ds, out_dir / f"{run_name(spec, out_dir)}.nc")
    finally:
        close(client)
    status = ds.attrs["status"]
    if "closure_passed" in ds.attrs:
        print(closure_summary(ds.attrs), file=sys.stderr)
    print(f"status {status}, {ds.attrs['wall_seconds']:.1f} s, {ds.attrs['events_per_second']:.3g} events/s",
          file=sys.stderr)
    if ds.attrs.get("errors"):
        print(ds.attrs["errors"], file=sys.stderr)
    print(path)
    if code:
        return code
    return 0 if status == "completed" else 1


EXPORT_FORMATS = "png,pdf,html"  # figures for slides, for papers (+ multipage report), and the standalone report


def cmd_export(args: argparse.Namespace) -> int:
    from app.export import export_run, parse_formats

    formats = parse_formats(args.format)  # before the file, so a bad flag never reaches the disk
    for path in export_run(args.run, formats, args.out):
        print(path)
    return 0


class ProgressBarSink:
    """A MetricsSink drawing one tqdm bar on stderr over all members' steps."""

    def __init__(self, total: int, desc: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="step", file=sys.stderr, desc=desc, mininterval=0.5, dynamic_ncols=True)
        self.last_step: dict[int, int] = {}

    def log_metrics(self, member: int, step: int, metrics: dict[str, float]) -> None:
        self.bar.update(step - self.last_step.get(member, 0))
        self.last_step[member] = step
        self.bar.set_postfix(loss_g=f"{metrics['loss_g']:.3f}", loss_d=f"{metrics['loss_d']:.3f}", refresh=False)

    def log_snapshot(self, member: int, step: int, snapshot: dict[str, Any]) -> None:
        pass

    def write(self, line: str) -> None:
        """A message above the bar, without breaking it."""
        self.bar.write(line)

    def close(self) -> None:
        self.bar.close()


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks.bench import run
    from engine.problems import problem_kinds

    if args.problem not in problem_kinds():
        return _fail(f"--problem: unknown problem {args.problem!r}; choose one of {', '.join(problem_kinds())}")
    for name in ("events", "width", "depth", "threads", "repeats", "members", "steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            return _fail(f"--{name}: must be at least 1, got {getattr(args, name)}")
    for name in ("window", "warmup"):
        if not getattr(args, name) > 0:
            return _fail(f"--{name}: must be a positive number of seconds, got {getattr(args, name)}")
    if args.members is not None and args.what not in ("ensemble", "gan"):
        return _fail(f"--members: only for bench ensemble and bench gan, not bench {args.what}")
    if args.what == "gan" and args.members is not None and args.device == "cuda":
        return _fail("--members: bench gan runs its members on CPU workers; for a GPU, bench gan --device cuda")
    if min(args.ranks) < 1:
        return _fail(f"--ranks: every rank count must be at least 1, got {args.ranks}")
    if args.device == "cuda":  # ensemble and dp run on an embedded cluster on this machine too
        import torch

        if not torch.cuda.is_available():
            return _fail(f"--device cuda: this process has no CUDA device (torch {torch.__version__})")
    return run(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from app.server import serve

    spec = _load(args.spec) if args.spec else None
    return serve(
        port=args.port,
        address=args.address,
        scheduler=args.scheduler,
        workers=args.workers,
        runs_dir=Path(args.runs_dir),
        spec=spec,
        show=args.show,
        data_dir=Path(args.data_dir),
    )


def _add_cluster_args(p: argparse.ArgumentParser, default_workers: int | None) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--scheduler", metavar="ADDR", help="address of an existing Dask scheduler (tcp://host:port)")
    g.add_argument("--workers", type=int, default=default_workers, metavar="N",
                   help="worker processes of the embedded LocalCluster" + (" (default: the spec's cluster.workers)"
                                                                           if default_workers is None else "")
                   + "; one per GPU instead where CUDA GPUs are visible (unless cluster.device is cpu)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qcf-studio", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="open the dashboard (embedded LocalCluster unless --scheduler)")
    p.add_argument("--port", type=int, default=5006)
    p.add_argument("--address", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    _add_cluster_args(p, default_workers=2)
    p.add_argument("--runs-dir", default="runs", help="where finished runs are saved (default: runs/)")
    p.add_argument("--spec", help="spec loaded at start (default: the proxy1d closure spec)")
    p.add_argument("--data-dir", default="sample_data",
                   help="measured-data files the browser may use (problem.data) live here (default: sample_data/)")
    p.add_argument("--show", action="store_true", help="open a browser tab")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("validate", help="check a spec; exit 2 with one message if it is invalid")
    p.add_argument("spec")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("data", help="write the spec's pseudo-data as NetCDF")
    p.add_argument("spec")
    p.add_argument("--out", required=True, metavar="FILE.nc")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("run", help="train headless; prints the results file as the last line")
    p.add_argument("spec")
    p.add_argument("--out", required=True, metavar="DIR")
    _add_cluster_args(p, default_workers=None)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("export", help="a run's figures and closure report, a copy of its NetCDF and its spec")
    p.add_argument("run", metavar="RUN.nc", help="a results file written by `qcf-studio run`")
    p.add_argument("--format", default=EXPORT_FORMATS, metavar="FMT[,FMT...]",
                   help=f"any of png, svg, pdf, html, comma-separated (default: {EXPORT_FORMATS}); pdf adds a "
                        "multipage report, html one standalone report page")
    p.add_argument("--out", required=True, metavar="DIR", help="where the files go (created if missing)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="throughput of the sampler or of full GAN steps (medians)")
    p.add_argument("what", choices=["sampler", "gan", "ensemble", "dp"],
                   help="sampler, gan: one process; ensemble, dp: whole runs on a LocalCluster")
    p.add_argument("--problem", default="proxy1d", help="a registered problem kind (default: proxy1d)")
    p.add_argument("--events", type=int, default=10_000, help="events per step (default: 10000)")
    p.add_argument("--width", type=int, default=64, help="discriminator width (gan)")
    p.add_argument("--depth", type=int, default=2, help="discriminator hidden layers (gan)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, one Dask worker's share)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--members", type=int, default=None,
                   help="ensemble: members (and workers) (default: 2); gan: train this many at once on as many "
                        "workers and count the events of all (default: one, in this process)")
    p.add_argument("--window", type=float, default=10.0, help="gan --members: seconds counted (default: 10)")
    p.add_argument("--warmup", type=float, default=10.0,
                   help="gan --members: seconds from submission to the counted window (default: 10)")
    p.add_argument("--ranks", type=lambda s: [int(r) for r in s.split(",")], default=[1, 2], metavar="R[,R...]",
                   help="dp: ranks to compare (default: 1,2)")
    p.add_argument("--steps", type=int, default=300, help="ensemble, dp: training steps per run (default: 300)")
    p.add_argument("--schedule", choices=["sync", "grouped"], default="sync", help="dp: sharing schedule")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where to train (default: cpu); ensemble, dp: the runs' cluster.device")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.func in (cmd_run, cmd_data, cmd_bench):  # heavy torch work in this process (not serve's web server)
        from engine.malloc import retain_freed_memory

        retain_freed_memory()
    from engine.spec import SpecError

    try:
        return args.func(args)
    except SpecError as e:
        return _fail(f"{getattr(args, 'spec', '') or 'spec'}: {e}")
    except (FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
