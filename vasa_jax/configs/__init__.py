"""Run configs: `base.py` holds every key, each run file (`tiny`, `demo`, `paper`) is a small delta.

Commands find them by name (`--config demo`) or by path (`--config configs/demo.py`,
or any file defining `get_config()`); see `vasa_jax/config.py`.
"""
