"""``qcf-studio serve`` (the dashboard, with its logins and TLS options) and ``qcf-studio credentials`` (the
password file of ``serve --auth basic``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qcf_studio.app.cli.common import fail, load_spec_arg, tls_from_args
from qcf_studio.app.extras import require_extra

__all__ = ["cmd_serve", "cmd_credentials"]


def cmd_serve(args: argparse.Namespace) -> int:
    require_extra("dashboard", "qcf-studio serve")
    from qcf_studio.app.dashboard.server import Access, serve

    spec = load_spec_arg(args.spec) if args.spec else None
    extra = None
    if args.oauth_extra_params:
        import json

        try:
            extra = json.loads(args.oauth_extra_params)
        except json.JSONDecodeError:
            return fail("--oauth-extra-params: not a JSON object")
    access = Access(
        auth=args.auth,
        credentials=Path(args.credentials) if args.credentials else None,
        oauth={
            "provider": args.oauth_provider,
            "key": args.oauth_key,
            "secret": args.oauth_secret,
            "redirect_uri": args.oauth_redirect_uri,
            "extra_params": extra,
            "encryption_key": args.oauth_encryption_key,
        },
        insecure=args.insecure,
        allow_origin=args.allow_origin,
    )
    return serve(
        port=args.port,
        address=args.address,
        scheduler=args.scheduler,
        workers=args.workers,
        runs_dir=Path(args.runs_dir),
        spec=spec,
        show=args.show,
        data_dir=Path(args.data_dir),
        access=access,
        security=tls_from_args(args),
    )


def cmd_credentials(args: argparse.Namespace) -> int:
    import getpass

    require_extra("dashboard", "qcf-studio credentials")
    from qcf_studio.app.dashboard.auth import CredentialsError, set_user

    try:
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass(f"password for {args.user}: ")
            if getpass.getpass("again: ") != password:
                return fail("the passwords differ; nothing changed")
        set_user(args.file, args.user, password)
    except CredentialsError as e:
        return fail(str(e))
    print(f"{args.file}: user {args.user} set", file=sys.stderr)
    return 0
