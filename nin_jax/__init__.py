"""Network-in-Network (Lin, Chen & Yan, 2014) in JAX/Flax.

Importing nin_jax changes nothing in the process. The entry points (nin-train,
experiments/*.py) call `configure_process()` before jax starts; a library user
who wants the same settings calls it first (see nin_jax/runtime/process_setup.py).
"""

from nin_jax.runtime.process_setup import configure as configure_process

__all__ = ['configure_process']
