"""Run configurations: a python file per run kind, overridden from the command line.

The shipped configs live in the package (`vasa_jax/configs/`): `base.py` defines
every key, each run file (`tiny`, `demo`, `paper`) changes what differs, in the
style of big_vision. A config file defines `get_config() -> ml_collections.ConfigDict`.
Every command loads one with `--config NAME` (a shipped one), `--config configs/x.py`
(the shipped `x`, as the README writes it) or a path to any such file, and takes
overrides as `--config.a.b=value`. The loaded config is locked: an unknown key or a
value of the wrong type is a one-line `UserError` that names the key.
"""

import ast
import importlib.util
import os
from typing import Any, Sequence

import ml_collections

from vasa_jax.errors import UserError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
BASE = "base"  # Every key, not a run of its own.


def resolve_path(path_or_name: str) -> str:
  """Accepts `configs/tiny.py`, an absolute path, or a bare name such as `tiny`."""
  if os.path.isfile(path_or_name):
    return path_or_name
  # `configs/x.py` (the README's form, from any folder) or a bare `x` means the shipped one.
  name = path_or_name[len("configs/"):] if path_or_name.startswith("configs/") else path_or_name
  candidate = os.path.join(CONFIG_DIR, name if name.endswith(".py") else name + ".py")
  if os.path.sep not in name and os.path.isfile(candidate):
    return candidate
  known = available()
  raise UserError(f"config file {path_or_name!r} not found; known configs: {', '.join(known) or 'none'} "
                  f"(give a path to a .py file defining get_config())")


def available() -> list[str]:
  """Names of the run configs shipped in vasa_jax/configs/."""
  return sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                if f.endswith(".py") and not f.startswith("_") and f[:-3] != BASE)


def load(path_or_name: str, overrides: Sequence[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
  """Loads a config file, applies `(dotted_key, value_text)` overrides, returns it locked."""
  path = resolve_path(path_or_name)
  spec = importlib.util.spec_from_file_location(f"vasa_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # A broken config file is the user's input too.
    raise UserError(f"config file {path} failed to load: {type(e).__name__}: {e}") from e
  if not hasattr(module, "get_config"):
    raise UserError(f"config file {path} defines no get_config() function")
  try:
    cfg = module.get_config()
  except (AttributeError, TypeError) as e:  # A run file setting a key base.py lacks, or a wrong type.
    raise UserError(f"config file {path}: {e}") from e
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise UserError(f"config file {path}: get_config() must return an ml_collections.ConfigDict")
  cfg.lock()
  for key, text in overrides:
    apply_override(cfg, key, text)
  return cfg


def apply_override(cfg: ml_collections.ConfigDict, dotted_key: str, text: str) -> None:
  """Sets `cfg.<dotted_key>` from command-line text, keeping the existing value's type."""
  parts = dotted_key.split(".")
  node = cfg
  for i, part in enumerate(parts[:-1]):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise UserError(_unknown_key(dotted_key, ".".join(parts[:i]), node))
    node = node[part]
  leaf = parts[-1]
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise UserError(_unknown_key(dotted_key, ".".join(parts[:-1]), node))
  current = node[leaf]
  if isinstance(current, ml_collections.ConfigDict):
    raise UserError(f"config key {dotted_key!r} is a section; set one of its keys: "
                    + ", ".join(f"{dotted_key}.{k}" for k in current.keys()))
  value = parse_value(dotted_key, text, current)
  with node.unlocked():
    node[leaf] = value


def _unknown_key(dotted_key: str, parent: str, node: Any) -> str:
  keys = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else "none"
  where = f"section {parent!r}" if parent else "the config"
  return f"unknown config key {dotted_key!r}; {where} has: {keys}"


def parse_value(key: str, text: str, current: Any) -> Any:
  """Parses `text` to the type of `current` (bool, int, float, str, tuple/list, or None)."""
  kind = type(current)

  def wrong(expected: str) -> UserError:
    return UserError(f"config key {key!r} expects {expected}, got {text!r}")

  if isinstance(current, bool):
    low = text.strip().lower()
    if low in ("true", "1", "yes", "on"):
      return True
    if low in ("false", "0", "no", "off"):
      return False
    raise wrong("a boolean (true/false)")
  if isinstance(current, int):
    try:
      return int(text)
    except ValueError:
      raise wrong("an integer") from None
  if isinstance(current, float):
    try:
      return float(text)
    except ValueError:
      raise wrong("a number") from None
  if isinstance(current, str):
    return text
  if isinstance(current, (tuple, list)):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = tuple(x.strip() for x in text.split(",")) if "," in text else None
    if isinstance(value, (int, float, str)):
      value = (value,)
    if not isinstance(value, (tuple, list)):
      raise wrong(f"a {kind.__name__} such as (1, 2)")
    for old, new in zip(current, value):
      if isinstance(old, (int, float)) and not isinstance(old, bool) and not isinstance(new, (int, float)):
        raise wrong(f"a {kind.__name__} of numbers")
    return kind(value)
  if current is None:
    try:
      return ast.literal_eval(text)
    except (ValueError, SyntaxError):
      return text
  raise wrong(f"a value of type {kind.__name__}")


def from_stored(stored: dict) -> ml_collections.ConfigDict:
  """A config saved by an older version (a run folder, a bundle), completed with today's keys.

  Keys added since it was saved take their `base.py` values, which keep what was then the
  only behaviour (every lever added later defaults to off); keys since removed are dropped.
  """
  spec = importlib.util.spec_from_file_location("vasa_config_base", os.path.join(CONFIG_DIR, BASE + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = module.get_config()
  cfg.unlock()

  def merge(dst: ml_collections.ConfigDict, src: dict) -> None:
    for key, value in src.items():
      if key not in dst:
        continue
      if isinstance(dst[key], ml_collections.ConfigDict) and isinstance(value, dict):
        merge(dst[key], value)
      else:
        dst[key] = tuple(value) if isinstance(value, list) else value

  merge(cfg, stored)
  return cfg

