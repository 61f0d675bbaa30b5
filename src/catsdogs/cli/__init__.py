"""The `catsdogs` command: a thin layer over the library, one module per group of commands (each command's
parser beside its handler). Here: the top-level parser, the library's errors in the command line's words,
and the exit codes (0 done, 1 failed, 2 bad usage or input). Heavy imports happen inside each command."""

from __future__ import annotations

import argparse
import re
import sys

from catsdogs import __version__, set_verbosity
from catsdogs.cli import bench, data, inference, results, review, training
from catsdogs.cli.common import OneLineErrorParser, resolve_input, use_default_weights
from catsdogs.errors import CatsdogsError, one_line
from catsdogs.verbosity import import_tensorflow_quietly

GROUPS = (data, review, training, results, inference, bench)
UNIT_OPTIONS = ("--budget",)  # options whose values carry a unit: argparse takes `-5m` for an option, not a value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="catsdogs", description="Photos of two kinds or more -> a trained, evaluated, "
                                "explainable classifier.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library logs")
    parser.add_argument("--version", action="version", version=f"catsdogs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(commands)
    return parser


def command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command]


def in_flags(error: CatsdogsError, parser: argparse.ArgumentParser, command: str) -> str:
    """The library's message in the command line's words: the parameter at fault, and any on/off option
    named in it, become their flags (`epochs must be >= 1` -> `--epochs must be >= 1`, `overwrite=True` ->
    `--overwrite`)."""
    message = str(error)
    sub = command_parser(parser, command)
    flags: dict[str, str] = {}
    for action in sub._actions:  # the first visible flag of each parameter (`--overwrite`, not `--force`)
        if action.help != argparse.SUPPRESS and action.option_strings and action.option_strings[-1].startswith("--"):
            flags.setdefault(action.dest, action.option_strings[-1])
    switches = {dest for dest, flag in flags.items()
                if isinstance(sub._option_string_actions[flag], argparse._StoreTrueAction)}
    named = {getattr(error, "parameter", None), *getattr(error, "others", ()), *switches,
             *(dest for dest in flags if "_" in dest)}
    for name in named & set(flags):
        message = re.sub(rf"(?<![\w-]){re.escape(name)}=(True|'[^']*'|\S+)",
                         lambda m, n=name: flags[n] if m.group(1) == "True" else f"{flags[n]} {m.group(1).strip(chr(39))}",
                         message)
        message = re.sub(rf"(?<![\w/.-]){re.escape(name)}(?![\w/.-])", flags[name], message)
    return message


def attach_negative_values(argv: list[str]) -> list[str]:
    """`--budget -5m` as `--budget=-5m`, so the value reaches its own check (`must be >= 0`) instead of argparse's
    `expected one argument`."""
    out: list[str] = []
    for token in argv:
        if out and out[-1] in UNIT_OPTIONS and re.fullmatch(r"-[\d.]\S*", token):
            token = f"{out.pop()}={token}"
        out.append(token)
    return out


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The arguments, DATA/SOURCE folded into one name; SystemExit on bad usage, --help and --version."""
    args = parser.parse_args(attach_negative_values(sys.argv[1:] if argv is None else list(argv)))
    resolve_input(args, command_parser(parser, args.command))
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parse(parser, argv)
    except SystemExit as exit:  # usage errors (2) and --help/--version (0), already printed by argparse
        return int(exit.code or 0)
    set_verbosity(2 if args.debug else 1)  # the library is quiet unless asked; the command line shows progress
    try:
        if args.needs_tensorflow:
            use_default_weights()
            if not args.debug:
                import_tensorflow_quietly()
        args.handler(args)
    except CatsdogsError as error:
        if args.debug:
            raise
        print(f"catsdogs {args.command}: error: {in_flags(error, parser, args.command)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"catsdogs {args.command}: interrupted", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except Exception as error:  # noqa: BLE001 - the one place that turns surprises into one line
        if args.debug:
            raise
        message = one_line(error, None, first_line=True) if str(error).strip() else ""
        print(f"catsdogs {args.command}: error: {type(error).__name__}: {message} (--debug shows the traceback)",
              file=sys.stderr)
        return 1
    return 0
