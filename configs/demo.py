"""The `demo` run config; it ships inside the package (`vasa_jax/configs/demo.py`, with every key in
`base.py`) so that installed copies find it by name: `--config demo`. This file keeps the repository's
top-level `configs/` path working (`--config configs/demo.py`); its docstring is the package file's."""

from vasa_jax.configs.demo import get_config  # noqa: F401
