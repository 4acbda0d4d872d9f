"""The ``qcf-studio`` command line: its subcommands (:mod:`~qcf_studio.app.cli.commands`,
:mod:`~qcf_studio.app.cli.campaign`), what
the commands that load a spec share (:mod:`~qcf_studio.app.cli.common`) and progress on stderr
(:mod:`~qcf_studio.app.cli.progress`)."""


def main(argv: list[str] | None = None) -> int:
    """``qcf-studio`` (the console script's entry point): :func:`qcf_studio.app.cli.commands.main`, imported when
    called."""
    from qcf_studio.app.cli.commands import main as commands_main

    return commands_main(argv)
