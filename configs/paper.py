"""The `paper` run config; it ships inside the package (`vasa_jax/configs/paper.py`, with every key in
`base.py`) so that installed copies find it by name: `--config paper`. This file keeps the repository's
top-level `configs/` path working (`--config configs/paper.py`); its docstring is the package file's."""

from vasa_jax.configs.paper import get_config  # noqa: F401
