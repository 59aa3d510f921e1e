"""Network-in-Network (Lin, Chen & Yan, 2014) in JAX/Flax."""

from nin_jax import xla_cpu as _xla_cpu

_xla_cpu.configure()
