"""The ``qcf-studio`` command line: its subcommands (:mod:`~app.cli.commands`, :mod:`~app.cli.campaign`), what
the commands that load a spec share (:mod:`~app.cli.common`) and progress on stderr (:mod:`~app.cli.progress`)."""


def main(argv: list[str] | None = None) -> int:
    """``qcf-studio`` (the console script's entry point): :func:`app.cli.commands.main`, imported when called."""
    from app.cli.commands import main as commands_main

    return commands_main(argv)
