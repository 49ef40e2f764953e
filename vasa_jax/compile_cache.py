"""JAX's persistent compilation cache for `sample`: compile once per machine, not once per run.

The cache folder is `$VASA_JAX_COMPILE_CACHE`, by default `~/.cache/vasa_jax/jax`; the
value `off` turns the cache off. A folder that cannot be created or written is a warning,
not an error: the run then compiles as if the cache were off.
"""

import os
import sys

import jax

ENV = "VASA_JAX_COMPILE_CACHE"
DEFAULT = os.path.join("~", ".cache", "vasa_jax", "jax")
# Compilations faster than this (single ops) are not worth a file; JAX's own default, 1 s,
# would leave out a model step that compiles fast on a fast machine.
MIN_COMPILE_SECONDS = 0.2


def folder(environ=os.environ) -> str | None:
  """The cache folder the environment asks for, or None for `off`."""
  value = environ.get(ENV, "").strip()
  if value.lower() == "off":
    return None
  return os.path.abspath(os.path.expanduser(value or DEFAULT))


def enable() -> str | None:
  """Turns the cache on for this process (before its first compile); returns the folder or None."""
  path = folder()
  if path is None:
    return None
  try:
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK):
      raise PermissionError(f"{path!r} is not writable")
  except OSError as e:
    print(f"warning: compilation cache {path!r} is not usable ({e}); compiling without it "
          f"(set {ENV}=off to silence this, or to another folder)", file=sys.stderr)
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path
