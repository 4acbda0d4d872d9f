"""The ``qcf-studio`` command: serve, validate, schema, data, run, campaign, export, bench.

Exit codes: 0 success; 1 a run that did not complete (stopped or failed); 2 invalid input (the
message names the file and field); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qcf_studio.app.cli.common import fail, load_spec_arg
from qcf_studio.app.cli.run import cmd_run
from qcf_studio.app.cli.serve import cmd_credentials, cmd_serve

__all__ = ["main"]


def cmd_validate(args: argparse.Namespace) -> int:
    spec = load_spec_arg(args.spec)
    if spec.problem.data:  # read and checked as `run` would read it, so that `run` cannot refuse it later
        from qcf_studio.engine.data.datafiles import read_spec_data  # torch-free, as the rest of validation

        data = read_spec_data(spec)
        counts = data.event_counts
        each = f"{counts[0]:,}" if (counts == counts[0]).all() else "/".join(f"{c:,}" for c in counts)
        weighted = (
            "" if data.weights is None else ", weighted" + (" (negative weights)" if data.negative_weights else "")
        )
        source = f"data {spec.problem.data} ({each} events/observable{weighted})"
    else:
        source = f"{spec.problem.events} events/observable"
    t = spec.training
    c = spec.campaign
    campaign = f"; campaign of {c.replicas} replicas ({c.truths} truth) × {', '.join(c.methods)}" if c else ""
    print(
        f"{args.spec}: valid — {spec.problem.kind}, {source}, {t.method} {t.steps} steps, "
        f"{spec.ensemble.members} member(s){campaign}"
    )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from qcf_studio.engine.spec_schema import spec_json_schema

    print(json.dumps(spec_json_schema(), indent=2, ensure_ascii=False))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from qcf_studio.engine.results.files import write_netcdf_atomic
    from qcf_studio.engine.run.runner import measured_data

    spec = load_spec_arg(args.spec)
    out = Path(args.out)
    if out.is_dir():
        return fail(f"--out {out}: is a directory; name the file to write, e.g. {out / (spec.name + '.nc')}")
    if out.exists() or out.is_symlink():
        return fail(f"--out {out}: exists; results and data are never overwritten, choose another name")
    ds = measured_data(spec).to_xarray()
    ds.attrs["spec"] = spec.to_yaml()
    ds.attrs["resolution"] = spec.detector.resolution
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        print(write_netcdf_atomic(ds, out))
    except FileExistsError:
        return fail(f"--out {out}: exists; results and data are never overwritten, choose another name")
    except OSError as e:
        return fail(f"--out {out}: cannot write ({e.strerror or type(e).__name__})", 1)
    return 0


EXPORT_FORMATS = "png,pdf,html"  # figures for slides, for papers (+ multipage report), and the standalone report


def cmd_campaign(args: argparse.Namespace) -> int:
    from qcf_studio.app.cli.campaign import run_campaign

    return run_campaign(args)


def cmd_export(args: argparse.Namespace) -> int:
    from qcf_studio.app.export import export_any

    written = export_any(args.run, args.format, args.out)  # a missing extra: one sentence (main catches it)
    for path in written:
        print(path)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from qcf_studio.benchmarks.cli import run
    from qcf_studio.engine.problems import problem_kinds

    if args.problem not in problem_kinds():
        return fail(f"--problem: unknown problem {args.problem!r}; choose one of {', '.join(problem_kinds())}")
    for name in ("events", "width", "depth", "threads", "repeats", "members", "steps", "replicas"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            return fail(f"--{name}: must be at least 1, got {getattr(args, name)}")
    for name in ("window", "warmup"):
        if not getattr(args, name) > 0:
            return fail(f"--{name}: must be a positive number of seconds, got {getattr(args, name)}")
    if args.members is not None and args.what not in ("ensemble", "gan"):
        return fail(f"--members: only for bench ensemble and bench gan, not bench {args.what}")
    if args.what == "gan" and args.members is not None and args.device == "cuda":
        return fail("--members: bench gan runs its members on CPU workers; for a GPU, bench gan --device cuda")
    if min(args.ranks) < 1:
        return fail(f"--ranks: every rank count must be at least 1, got {args.ranks}")
    if args.device == "cuda":  # ensemble and dp run on an embedded cluster on this machine too
        import torch

        if not torch.cuda.is_available():
            return fail(f"--device cuda: this process has no CUDA device (torch {torch.__version__})")
    return run(args)


def _add_cluster_args(p: argparse.ArgumentParser, default_workers: int | None) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--scheduler",
        metavar="ADDR",
        help="address of an existing Dask scheduler (tcp://host:port, or tls://host:port with --tls-*)",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=default_workers,
        metavar="N",
        help="worker processes of the embedded LocalCluster"
        + (" (default: the spec's cluster.workers)" if default_workers is None else "")
        + "; one per GPU instead where CUDA GPUs are visible (unless cluster.device is cpu)",
    )
    t = p.add_argument_group("TLS to a remote scheduler (tls://); default: Dask's distributed.comm.tls config")
    t.add_argument("--tls-ca-file", metavar="PEM", help="the CA certificate that signed the scheduler's")
    t.add_argument("--tls-cert", metavar="PEM", help="this client's certificate (may hold the key too)")
    t.add_argument("--tls-key", metavar="PEM", help="this client's private key, if not in --tls-cert")


def build_parser() -> argparse.ArgumentParser:
    from qcf_studio.engine import __version__

    parser = argparse.ArgumentParser(prog="qcf-studio", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--version", action="version", version=f"qcf-studio {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="open the dashboard (embedded LocalCluster unless --scheduler)")
    p.add_argument("--port", type=int, default=5006)
    p.add_argument("--address", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    _add_cluster_args(p, default_workers=2)
    p.add_argument("--runs-dir", default="runs", help="where finished runs are saved (default: runs/)")
    p.add_argument("--spec", help="spec loaded at start (default: the proxy1d closure spec)")
    p.add_argument(
        "--data-dir",
        default="sample_data",
        help="measured-data files the browser may use (problem.data) live here (default: sample_data/)",
    )
    p.add_argument("--show", action="store_true", help="open a browser tab")
    g = p.add_argument_group("who may use the dashboard (required when --address is not loopback)")
    g.add_argument(
        "--auth",
        choices=["none", "basic", "oauth"],
        default="none",
        help="basic: users and hashed passwords from --credentials; oauth: one of Panel's providers",
    )
    g.add_argument("--credentials", metavar="FILE", help="users of --auth basic (`qcf-studio credentials` makes it)")
    g.add_argument("--oauth-provider", help="github, google, azure, okta, auth0, gitlab, generic, ... (Panel's)")
    g.add_argument("--oauth-key", help="the OAuth client id (or $PANEL_OAUTH_KEY)")
    g.add_argument("--oauth-secret", help="the OAuth client secret (better: $PANEL_OAUTH_SECRET)")
    g.add_argument("--oauth-redirect-uri", help="where the provider sends the browser back to")
    g.add_argument("--oauth-extra-params", metavar="JSON", help='provider settings, e.g. \'{"tenant": "..."}\'')
    g.add_argument("--oauth-encryption-key", help="encrypts the tokens kept in cookies (or $PANEL_OAUTH_ENCRYPTION)")
    g.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback --address without a login (only on a network you trust)",
    )
    g.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="also accept the websocket from pages served as HOST:PORT (a proxy's name); repeatable",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("credentials", help="add a user (or change their password) in a --credentials file")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--user", required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin (one line)")
    p.set_defaults(func=cmd_credentials)

    p = sub.add_parser("validate", help="check a spec; exit 2 with one message if it is invalid")
    p.add_argument("spec")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "schema",
        help="print the spec's JSON Schema (for editor completion: qcf-studio schema > spec.schema.json)",
    )
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("data", help="write the spec's pseudo-data as NetCDF")
    p.add_argument("spec")
    p.add_argument("--out", required=True, metavar="FILE.nc")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("run", help="train headless; prints the results file as the last line")
    p.add_argument("spec")
    p.add_argument("--out", required=True, metavar="DIR")
    _add_cluster_args(p, default_workers=None)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("campaign", help="fit many pseudo-data replicas (resumable); prints the summary file last")
    p.add_argument("spec")
    p.add_argument("--out", required=True, metavar="DIR", help="the campaign's folder is DIR/<spec name>/")
    p.add_argument(
        "--replicas",
        type=int,
        default=None,
        metavar="N",
        help="pseudo-data replicas (default: the spec's campaign.replicas)",
    )
    p.add_argument(
        "--methods",
        metavar="M[,M...]",
        help="fit the replicas by these methods, e.g. gan,mle (default: the spec's campaign.methods)",
    )
    _add_cluster_args(p, default_workers=None)
    p.set_defaults(func=cmd_campaign)

    p = sub.add_parser(
        "export", help="a run's (or a campaign's) figures and report, a copy of its NetCDF and spec; a run as data"
    )
    p.add_argument(
        "run",
        metavar="RUN.nc",
        help="a results file written by `qcf-studio run`, or a campaign's "
        "summary.nc (its pulls, coverage, R_bv and ξ_1σ figures)",
    )
    p.add_argument(
        "--format",
        default=EXPORT_FORMATS,
        metavar="FMT[,FMT...]",
        help=f"any of png, svg, pdf, html, hepdata, grid, comma-separated (default: {EXPORT_FORMATS}); pdf adds a "
        "multipage report, html one standalone report page; for a run, hepdata writes a HEPData submission "
        "(needs qcf-studio[io]) and grid its QCF replicas (NetCDF, and LHAPDF6 sets for 1D QCFs on x in (0, 1])",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="where the files go (created if missing)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="throughput of the sampler or of full GAN steps (medians)")
    p.add_argument(
        "what",
        choices=["sampler", "gan", "ensemble", "dp", "campaign"],
        help="sampler, gan: one process; ensemble, dp: whole runs on a LocalCluster; campaign: fits per "
        "hour of a closure campaign on each of --ranks worker counts",
    )
    p.add_argument("--problem", default="proxy1d", help="a registered problem kind (default: proxy1d)")
    p.add_argument("--events", type=int, default=10_000, help="events per step (default: 10000)")
    p.add_argument("--width", type=int, default=64, help="discriminator width (gan)")
    p.add_argument("--depth", type=int, default=2, help="discriminator hidden layers (gan)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, one Dask worker's share)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument(
        "--members",
        type=int,
        default=None,
        help="ensemble: members (and workers) (default: 2); gan: train this many at once on as many "
        "workers and count the events of all (default: one, in this process)",
    )
    p.add_argument("--window", type=float, default=10.0, help="gan --members: seconds counted (default: 10)")
    p.add_argument(
        "--warmup",
        type=float,
        default=10.0,
        help="gan --members: seconds from submission to the counted window (default: 10)",
    )
    p.add_argument(
        "--ranks",
        type=lambda s: [int(r) for r in s.split(",")],
        default=[1, 2],
        metavar="R[,R...]",
        help="dp: ranks to compare; campaign: worker counts to compare (default: 1,2)",
    )
    p.add_argument("--method", choices=["gan", "mle"], default="gan", help="campaign: the fits' method (default: gan)")
    p.add_argument("--replicas", type=int, default=12, help="campaign: replicas per worker count (default: 12)")
    p.add_argument("--steps", type=int, default=300, help="ensemble, dp: training steps per run (default: 300)")
    p.add_argument("--schedule", choices=["sync", "grouped"], default="sync", help="dp: sharing schedule")
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where to train (default: cpu); ensemble, dp: the runs' cluster.device",
    )
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # torch work in this process (not serve's web server, nor a campaign's client: only its workers train, and with
    # many threads deserialising results the retained arenas grew a campaign's client to gigabytes)
    if args.func in (cmd_run, cmd_data, cmd_bench):
        from qcf_studio.engine.gan.accelerator import tune_process

        tune_process()
    from qcf_studio.app.extras import MissingExtraError
    from qcf_studio.engine.spec import SpecError

    try:
        return args.func(args)
    except SpecError as e:
        return fail(f"{getattr(args, 'spec', '') or 'spec'}: {e}")
    except (FileNotFoundError, ValueError, MissingExtraError) as e:
        return fail(str(e))
    except OSError as e:  # disk full, permissions, a lost connection: a sentence, not a traceback
        where = f"{e.filename}: " if e.filename else ""
        return fail(f"{where}{e.strerror or f'{type(e).__name__}: {str(e)[:300]}'}", 1)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
