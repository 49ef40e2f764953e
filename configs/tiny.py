"""The `tiny` run config; it ships inside the package (`vasa_jax/configs/tiny.py`, with every key in
`base.py`) so that installed copies find it by name: `--config tiny`. This file keeps the repository's
top-level `configs/` path working (`--config configs/tiny.py`); its docstring is the package file's."""

from vasa_jax.configs.tiny import get_config  # noqa: F401
