"""Network-in-Network (Lin, Chen & Yan, 2014) in JAX/Flax."""

from nin_jax import storage as _storage
from nin_jax import xla_cpu as _xla_cpu

_xla_cpu.configure()
_storage.use_fsspec_for_buckets()
