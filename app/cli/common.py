"""What every ``qcf-studio`` command that loads a spec shares: the error line, the spec loader, TLS options."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["fail", "load_spec_arg", "tls_from_args"]


def fail(message: str, code: int = 2) -> int:
    """Print ``qcf-studio: error: <message>`` on stderr; returns the exit code (2: bad input)."""
    print(f"qcf-studio: error: {message}", file=sys.stderr)
    return code


def load_spec_arg(path: str) -> Any:  # -> Spec, imported lazily so that `--help` is instant
    from qcf_studio.engine.spec import load_spec

    return load_spec(path)


def tls_from_args(args: argparse.Namespace) -> Any:
    """The ``--tls-*`` options as a Dask ``Security`` (or Dask's own TLS config when none is given)."""
    from qcf_studio.app.cluster import tls_security

    return tls_security(args.tls_ca_file, args.tls_cert, args.tls_key)
