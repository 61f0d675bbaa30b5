"""What every command's parser shares: the default data and weights, argument types, and the flags written
the same way in every command (DATA/SOURCE, `--overwrite`, `--seed`, the split sizes, `--engine`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from catsdogs.errors import UsageError
from catsdogs.options import DEFAULT_SEED, positive_int

SOURCE_ENV = "CATSDOGS_DEFAULT_SOURCE"  # the default SOURCE (the Makefile sets it to ../shared's zip)
WEIGHTS_ENV = "CATSDOGS_WEIGHTS"  # the offline ImageNet weights folder (read by catsdogs.models.weights)
DEFAULT_SOURCE_NAME = Path("..") / "shared" / "data" / "dogs-vs-cats-train-5000.zip"
SHARED_WEIGHTS_NAME = Path("..") / "shared" / "weights" / "keras"
DEFAULT_SOURCE_HELP = f"default: ${SOURCE_ENV}, else {DEFAULT_SOURCE_NAME.as_posix()} from the working folder"
NO_SOURCE_HELP = ("no SOURCE given and the default data ({path}) is absent: download Kaggle's Dogs vs. Cats "
                  "train.zip (https://www.kaggle.com/c/dogs-vs-cats/data) or run `catsdogs download --out "
                  f"PetImages.zip`, then pass it as SOURCE (or set ${SOURCE_ENV} to it)")

Handler = Callable[[argparse.Namespace], None]


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line with a pointer to --help, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def default_source() -> Path:
    """The default data: $CATSDOGS_DEFAULT_SOURCE, else ../shared/data/dogs-vs-cats-train-5000.zip from the
    working folder (never a path relative to the installed package)."""
    path = Path(os.environ[SOURCE_ENV]) if os.environ.get(SOURCE_ENV) else Path.cwd() / DEFAULT_SOURCE_NAME
    if path.exists():
        return path.resolve()
    raise UsageError(NO_SOURCE_HELP.format(path=path))


def use_default_weights() -> None:
    """$CATSDOGS_WEIGHTS, when unset, becomes ../shared/weights/keras of the working folder if it exists."""
    found = Path.cwd() / SHARED_WEIGHTS_NAME
    if not os.environ.get(WEIGHTS_ENV) and found.is_dir():
        os.environ[WEIGHTS_ENV] = str(found.resolve())


def add_command(commands, name: str, handler: Handler, help: str, needs_tensorflow: bool = True
                ) -> argparse.ArgumentParser:
    """One sub-command. Its `--debug` leaves the top-level one alone unless given (`catsdogs --debug CMD`)."""
    parser = commands.add_parser(name, help=help, description=help)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and library logs")
    parser.set_defaults(handler=handler, needs_tensorflow=needs_tensorflow)
    return parser


def add_input_argument(parser: argparse.ArgumentParser, name: str, help: str, required: bool = False,
                       flag: bool = True) -> None:
    """DATA or SOURCE, accepted both positionally and as `--data`/`--source` in every command (`flag=False`
    when the flag exists already); `resolve_input` merges the two after parsing."""
    metavar = name.upper()
    parser.add_argument(f"{name}_positional", type=Path, nargs="?", metavar=metavar, help=help)
    if flag:
        parser.add_argument(f"--{name}", type=Path, metavar=metavar, help=f"{metavar} as a flag (the same)")
    parser.set_defaults(input_spec=(name, required))


def resolve_input(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fold the positional DATA/SOURCE into `args.data`/`args.source`; usage error (exit 2) on a conflict or
    a missing required one."""
    if not hasattr(args, "input_spec"):
        return
    name, required = args.input_spec
    positional, flag = getattr(args, f"{name}_positional"), getattr(args, name, None)
    if positional is not None and flag is not None and positional != flag:
        parser.error(f"{name.upper()} given twice ({positional} and --{name} {flag})")
    value = positional if positional is not None else flag
    if value is None and required:
        parser.error(f"the following arguments are required: {name.upper()} (or --{name})")
    setattr(args, name, value)


def add_overwrite_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """`--overwrite`, with the older `--force` as a hidden alias."""
    parser.add_argument("--overwrite", action="store_true", help=help)
    add_force_alias(parser)


def add_force_alias(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", dest="overwrite", action="store_true", help=argparse.SUPPRESS)


def add_split_arguments(parser: argparse.ArgumentParser, train_help: str) -> None:
    """The split sizes and the seed, as prepare reads them (fit and prepare)."""
    parser.add_argument("--train", type=split_size, metavar="N", help=train_help)
    parser.add_argument("--val", type=split_size, metavar="N", help="validation photos (default 15%% of each class)")
    parser.add_argument("--test", type=split_size, metavar="N", help="test photos (default 15%% of each class)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"default {DEFAULT_SEED}")


def add_engine_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=["auto", "keras", "onnx", "openvino", "int8"], default="auto",
                        help="inference engine (default auto: the fastest installed one whose answers match Keras' "
                        "within 1e-4 on this run; its graph is kept in RUN/engines/); int8: the run quantized "
                        "once (as export --quantize int8: kept only within 0.5 point of test accuracy)")


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                        help="auto: bfloat16/float16 mixed precision by GPU, bfloat16 on CPUs that do it natively")


def split_size(text: str) -> int | float:
    from catsdogs.preparation import parse_split_size

    try:
        return parse_split_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def port_number(text: str) -> int:
    """A TCP port for --port: 0 (any free port) to 65535."""
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be at most 65535 (0: any free port), got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


__all__ = ["OneLineErrorParser", "add_command", "add_engine_argument", "add_input_argument", "add_overwrite_argument",
           "add_split_arguments", "default_source", "non_negative_int", "port_number", "positive_int", "resolve_input",
           "use_default_weights"]


def add_corrections_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corrections", type=Path, metavar="FILE", help="a CSV source,action,label (as catsdogs "
                        "review writes it): relabel photos of SOURCE (label = the new class) or exclude them")
