"""vasa_jax: an open JAX/Flax reimplementation of VASA-1 (see README.md)."""

import sys as _sys

# `python -m vasa_jax.<command>` (while Python looks for the module, argv[0] is "-m"): handle
# Ctrl-C and SIGTERM from the start, so that the seconds of imports before the command runs
# exit as cleanly as the rest (`interrupt`). Importing vasa_jax as a library installs nothing.
if _sys.argv[:1] == ["-m"]:
  from vasa_jax import interrupt as _interrupt
  _interrupt.install()
