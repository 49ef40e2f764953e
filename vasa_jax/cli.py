"""Command-line conventions shared by every `python -m vasa_jax.<command>`.

- `--help` explains every flag; flags are spelled out (no abbreviations);
- `--config PATH` loads a run config and `--config.a.b=VALUE` overrides a key;
- a failure prints one line, `error: ...`, and exits with status 2 for bad input
  (status 1 for an unexpected internal failure), with no traceback unless
  `--debug` is given;
- Ctrl-C (or SIGTERM) prints `error: interrupted`, deletes half-written outputs and
  exits with 130 (143), at once, even while XLA compiles (`interrupt`).
"""

import argparse
import signal
import sys
from typing import Callable, Sequence

from vasa_jax import config as config_lib
from vasa_jax import interrupt
from vasa_jax.errors import UserError

EXIT_USAGE = 2
EXIT_INTERNAL = 1

_CONFIG_EPILOG = (
    "config overrides: any key of the loaded config can be set with --config.KEY=VALUE "
    "(for example --config.train.steps=100); unknown keys and values of the wrong type are rejected.")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Shows a flag's default only when there is one worth showing."""

  def _get_help_string(self, action):
    if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
      return action.help
    return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
  """argparse with one-line errors (`error: ...`, exit 2) instead of usage dumps."""

  def error(self, message: str):
    raise UserError(f"{message} (see {self.prog} --help)")


def make_parser(prog: str, description: str, *, config: bool = False,
                default_config: str | None = None) -> Parser:
  """A parser with `--debug` and, if `config`, `--config` plus `--config.KEY=VALUE` overrides."""
  # allow_abbrev=False: a prefix (--aud) is an error, not silently --audio.
  parser = Parser(prog=prog, description=description,
                  epilog=_CONFIG_EPILOG if config else None,
                  formatter_class=_HelpFormatter, allow_abbrev=False)
  parser.add_argument("--debug", action="store_true",
                      help="show the full traceback when something fails")
  if config:
    parser.add_argument(
        "--config", default=default_config, required=default_config is None,
        help="run config: a file under configs/ (e.g. configs/tiny.py) or its name; known: "
        + ", ".join(config_lib.available()))
  return parser


def parse(parser: Parser, argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Parses argv; with a `--config` flag, also loads the config into `args.config`."""
  argv = list(sys.argv[1:] if argv is None else argv)
  takes_config = any(a.dest == "config" for a in parser._actions)
  if not takes_config:
    return parser.parse_args(argv)
  args, rest = parser.parse_known_args(argv)
  overrides = _split_overrides(parser, rest)
  args.config_path = args.config
  args.config = config_lib.load(args.config, overrides)
  return args


def _split_overrides(parser: Parser, rest: list[str]) -> list[tuple[str, str]]:
  overrides = []
  i = 0
  while i < len(rest):
    arg = rest[i]
    if not arg.startswith("--config."):
      parser.error(f"unrecognized argument {arg!r}")
    key, eq, value = arg[len("--config."):].partition("=")
    if not eq:
      if i + 1 >= len(rest):
        raise UserError(f"config override --config.{key} needs a value (--config.{key}=VALUE)")
      value = rest[i + 1]
      i += 1
    if not key:
      parser.error("empty config key in --config.=VALUE")
    overrides.append((key, value))
    i += 1
  return overrides


def run(main: Callable[[argparse.Namespace], int | None], parser: Parser,
        argv: Sequence[str] | None = None) -> int:
  """Parses, runs `main(args)`, turns failures into one line; returns the exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  debug = "--debug" in argv
  try:
    with interrupt.handled():
      args = parse(parser, argv)
      return int(main(args) or 0)
  except UserError as e:
    if debug:
      raise
    print(f"error: {one_line(e)}", file=sys.stderr)
    return EXIT_USAGE
  except KeyboardInterrupt:  # Where `interrupt` is not in force: not the main thread, training's second Ctrl-C.
    print(interrupt.MESSAGE[signal.SIGINT], file=sys.stderr)
    return interrupt.EXIT_STATUS[signal.SIGINT]
  except Exception as e:  # Anything else is our bug: still one line, but say how to see more.
    if debug:
      raise
    print(f"error: internal failure: {type(e).__name__}: {one_line(e)} (rerun with --debug for the traceback)",
          file=sys.stderr)
    return EXIT_INTERNAL


def check_range(name: str, value, lo, hi, why: str = ""):
  """`value` if lo <= value <= hi (NaN is not), else a UserError naming `name` and the range."""
  if not lo <= value <= hi:
    raise UserError(f"{name} {_number(value)} is out of range; accepted: {_number(lo)}..{_number(hi)}{why}")
  return value


def _number(x) -> str:
  return str(x) if isinstance(x, int) else f"{x:g}"


def main_entry(main: Callable[[argparse.Namespace], int | None], parser: Parser) -> None:
  """`if __name__ == "__main__": cli.main_entry(main, make_parser(...))`."""
  sys.exit(run(main, parser))


def one_line(e: BaseException) -> str:
  """An exception's message on one line."""
  return " ".join(str(e).split()) or type(e).__name__
