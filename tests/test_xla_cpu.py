"""The XLA:CPU settings of nin_jax/runtime/xla_cpu.py (conftest applies them, as the entry points do)."""

import jax
import jax.numpy as jnp
from nin_jax.runtime import xla_cpu


def test_flags_are_added_to_xla_flags():
  environ = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  assert xla_cpu.configure(environ) == [
      '--xla_cpu_experimental_ynn_fusion_type=reduce',
      '--xla_cpu_enable_concurrency_optimized_scheduler=true']
  assert environ['XLA_FLAGS'] == (
      '--xla_force_host_platform_device_count=8 '
      '--xla_cpu_experimental_ynn_fusion_type=reduce '
      '--xla_cpu_enable_concurrency_optimized_scheduler=true')
  assert xla_cpu.configure(environ) == []  # idempotent


def test_a_users_own_value_wins():
  environ = {'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type=dot'}
  assert xla_cpu.configure(environ) == [
      '--xla_cpu_enable_concurrency_optimized_scheduler=true']
  assert environ['XLA_FLAGS'] == ('--xla_cpu_experimental_ynn_fusion_type=dot '
                                  '--xla_cpu_enable_concurrency_optimized_scheduler=true')


def test_on_cpu_convolutions_and_dots_stay_on_xla_and_sums_go_to_the_library():
  # Fails if a jaxlib upgrade changes what the flag means: re-measure then.
  cpu = jax.devices('cpu')[0]
  conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), [(2, 2)] * 2, dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  x, w = jax.device_put((jnp.ones((8, 16, 16, 96)), jnp.ones((5, 5, 96, 192))), cpu)
  hlo = conv.lower(x, w).compile().as_text()
  assert 'ynn_fusion' not in hlo and 'convolution(' in hlo
  a, b = jax.device_put((jnp.ones((512, 192)), jnp.ones((192, 160))), cpu)
  assert 'ynn_fusion' not in jax.jit(jnp.matmul).lower(a, b).compile().as_text()
  assert 'ynn_fusion' in jax.jit(lambda a: a.sum(0)).lower(a).compile().as_text()
