"""The ``lossweave`` command line tool (also ``python -m lossweave``).

Commands::

    lossweave train     train one Objective on a dataset; write a run folder
                        with metrics, history, models, figures and an HTML report
    lossweave compare   the same model and data under several objectives; one
                        report with their table and feature pictures side by side
    lossweave search    answer queries from a file with a trained run's index:
                        nearest references and open-set labels

Bad input (an unknown option or name, a bad value, a missing or malformed
config file) exits with status 2 and one line ``lossweave: error: ...`` on
stderr; an unknown option or config key names the closest one. Keras is
imported only inside the commands, after ``--backend`` is applied, so
``--help`` imports no backend.
"""

import argparse
import difflib
import importlib
import sys

PROG = "lossweave"

# command name -> module with add_parser(subparsers) and run(args) -> exit status
COMMANDS = {
    "train": "lossweave.cli.train",
    "compare": "lossweave.cli.compare",
    "search": "lossweave.cli.search",
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command line, option value or config file: exit status 2, one line on stderr."""


class Interrupted(Exception):
    """Ctrl-C during a run that can be continued; the message is the command that continues it."""


# Names from other tools and papers that none of the rules of ``closest`` finds.
ALIASES = {"lambda": "center-weight"}


def closest(name, names):
    """The one of ``names`` that ``name`` most likely meant, or ``None``.

    An alias, the initials of a hyphenated name (``lr``), the one name
    that has ``name`` as a word (``dim``), else the nearest spelling.

    Example:
        >>> names = ["learning-rate", "batch-size", "embedding-dim", "epochs"]
        >>> closest("lr", names), closest("dim", names), closest("epoch", names), closest("zzz", names)
        ('learning-rate', 'embedding-dim', 'epochs', None)
    """
    name = name.lower().replace("_", "-")
    if ALIASES.get(name) in names:
        return ALIASES[name]
    for rule in (lambda n: "".join(word[0] for word in n.split("-")) == name.replace("-", ""),
                 lambda n: name in n.split("-")):
        found = [n for n in names if "-" in n and rule(n)]
        if len(found) == 1:
            return found[0]
    found = difflib.get_close_matches(name, names, n=1)
    return found[0] if found else None


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser that raises ``UsageError`` instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(message)


def build_parser():
    """The top-level parser with one subparser per command."""
    from lossweave import __version__

    parser = ArgumentParser(
        prog=PROG,
        description="Multi-term training objectives for Keras 3: train, report and search.",
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


def _unknown(args, extras, parser):
    """The usage error of arguments no option took: the closest option of the command, or a hint."""
    command = args.command
    if not extras[0].startswith("-"):
        return UsageError(f"unrecognized arguments: {' '.join(extras)}")
    name = extras[0].split("=", 1)[0]
    hint = getattr(args, "unknown_hints", {}).get(name.lstrip("-"))
    if hint:
        return UsageError(f"{name}: {hint}")
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    known = [flag[2:] for action in commands.choices[command]._actions for flag in action.option_strings
             if flag.startswith("--")]
    guess = closest(name.lstrip("-"), known)
    suggestion = f"did you mean --{guess}? " if guess else ""
    return UsageError(f"unrecognized option {name}; {suggestion}`{PROG} {command} --help` lists every option.")


def main(argv=None):
    """Run the tool on ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Example:
        >>> main(["train", "--data", "nope"])  # stderr: lossweave: error: --data: unknown data ...
        2
    """
    from_process = argv is None
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        parser = build_parser()
        args, extras = parser.parse_known_args(argv)
        if args.command is None:
            raise UsageError(f"a command is required; choose from: {', '.join(COMMANDS)}.")
        if extras:
            raise _unknown(args, extras, parser)
        return args.run(args, argv=argv, from_process=from_process)
    except UsageError as error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exit_:  # --help, --version
        return exit_.code if isinstance(exit_.code, int) else EXIT_OK
    except Interrupted as interrupted:
        print(f"{PROG}: interrupted; continue the run with: {interrupted}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


__all__ = ["ArgumentParser", "COMMANDS", "Interrupted", "UsageError", "build_parser", "closest", "main"]
