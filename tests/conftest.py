"""Shared test setup: quiet, CPU-only JAX with a compilation cache across tests."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

# Several tests build the same model and step; compiling each once per session
# keeps the suite fast on 2 cores.
_CACHE = os.environ.get("VASA_TEST_COMPILE_CACHE") or os.path.join(tempfile.gettempdir(), "vasa_jax_test_xla_cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
