"""The ``lossweave`` command line tool (also ``python -m lossweave``).

Commands::

    lossweave train     train one Objective on a dataset; write a run folder
                        with metrics, history, models, figures and an HTML report
    lossweave compare   the same model and data under several objectives; one
                        report with their table and feature pictures side by side

Bad input (an unknown option or name, a bad value, a missing or malformed
config file) exits with status 2 and one line ``lossweave: error: ...`` on
stderr. Keras is imported only inside the commands, after ``--backend`` is
applied.
"""

import argparse
import importlib
import sys

PROG = "lossweave"

# command name -> module with add_parser(subparsers) and run(args) -> exit status
COMMANDS = {
    "train": "lossweave.cli.train",
    "compare": "lossweave.cli.compare",
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command line, option value or config file: exit status 2, one line on stderr."""


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser that raises ``UsageError`` instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(message)


def build_parser():
    """The top-level parser with one subparser per command."""
    from lossweave import __version__

    parser = ArgumentParser(
        prog=PROG,
        description="Multi-term training objectives for Keras 3: train and report.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=ArgumentParser
    )
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(commands)
    return parser


def _one_line(text):
    return " ".join(str(text).split())


def main(argv=None):
    """Run the tool on ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Example:
        >>> main(["train", "--data", "nope"])  # stderr: lossweave: error: --data: unknown data ...
        2
    """
    from_process = argv is None
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError(f"a command is required; choose from: {', '.join(COMMANDS)}.")
        return args.run(args, argv=argv, from_process=from_process)
    except UsageError as error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exit_:  # --help, --version
        return exit_.code if isinstance(exit_.code, int) else EXIT_OK
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


__all__ = ["ArgumentParser", "COMMANDS", "UsageError", "build_parser", "main"]
