"""The presets are the authors' networks: parameter counts, shapes, FLOPs, heads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nin_jax.model import nin
from nin_jax.model import architectures


def abstract_model(preset, **kwargs):
  return nnx.eval_shape(lambda: nin.NIN(architectures.get_preset(preset),
                                           rngs=nnx.Rngs(0), **kwargs))


def layer_shapes(model, input_shape):
  """(layer name, output H×W×C) of every layer, from an abstract forward pass."""
  graphdef, state = nnx.split(model)
  taps = []
  jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, taps=taps), state,
                 jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
  return {name: shape[1:] for name, shape in taps}


# Weights and biases, as ../shared/reference/nin-facts.md counts them.
@pytest.mark.parametrize('preset, params', [
    ('cifar10', 966_986),
    ('cifar10_caffe', 966_986),
    ('cifar100', 984_356),
    ('mnist', 349_674),
    ('svhn', 1_986_026),
    ('imagenet', 7_595_176),
])
def test_parameter_count_is_the_papers(preset, params):
  assert nin.count_params(abstract_model(preset)) == params


def test_cifar10_layer_by_layer():
  shapes = layer_shapes(abstract_model('cifar10'), (32, 32, 3))
  assert shapes == {
      'block1.conv': (32, 32, 192), 'block1.cccp1': (32, 32, 160),
      'block1.cccp2': (32, 32, 96), 'block1.pool': (16, 16, 96),
      'block2.conv': (16, 16, 192), 'block2.cccp1': (16, 16, 192),
      'block2.cccp2': (16, 16, 192), 'block2.pool': (8, 8, 192),
      'block3.conv': (8, 8, 192), 'block3.cccp1': (8, 8, 192),
      'block3.cccp2': (8, 8, 10),
      'logits': (10,),  # global average pool over the 8×8 class maps
  }


@pytest.mark.parametrize('size, sizes', [
    (224, (54, 27, 27, 13, 13, 6, 6)),
    (227, (55, 27, 27, 13, 13, 6, 6)),
])
def test_imagenet_spatial_sizes(size, sizes):
  model = abstract_model('imagenet', input_shape=(size, size, 3))
  shapes = layer_shapes(model, (size, size, 3))
  got = tuple(shapes[k][0] for k in ('block1.cccp2', 'block1.pool', 'block2.cccp2',
                                     'block2.pool', 'block3.cccp2', 'block3.pool',
                                     'block4.cccp2'))
  assert got == sizes
  assert shapes['block4.cccp2'] == (6, 6, 1000)
  assert shapes['logits'] == (1000,)


def test_mnist_spatial_sizes():
  shapes = layer_shapes(abstract_model('mnist'), (28, 28, 1))
  assert shapes['block1.pool'] == (14, 14, 48)
  assert shapes['block2.pool'] == (7, 7, 48)
  assert shapes['block3.cccp2'] == (7, 7, 10)


def test_pool_rounds_up_like_caffe():
  # Floor mode would give 15 and 7; cuda-convnet and Caffe give 16 and 8.
  assert nin.pool_output_size(32, 3, 2) == 16
  assert nin.pool_output_size(16, 3, 2) == 8
  assert nin.pool_output_size(54, 3, 2) == 27
  assert nin.pool_output_size(13, 3, 2) == 6


def test_max_and_avg_pool_values_at_the_clipped_edge():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)  # 4 → ceil((4-3)/2)+1 = 2
  mx = nin.pool2d(x, 'max', 3, 2)[0, :, :, 0]
  av = nin.pool2d(x, 'avg', 3, 2)[0, :, :, 0]
  np.testing.assert_array_equal(mx, [[10, 11], [14, 15]])
  # The last window covers rows/cols 2..3 only; Caffe divides by the 2×2 part inside.
  np.testing.assert_allclose(av, [[5.0, 6.5], [11.0, 12.5]])


@pytest.mark.parametrize('shape, window, stride', [
    ((2, 32, 32, 5), 3, 2),   # NIN-CIFAR's pools: 32 → 16, clipped last window
    ((2, 13, 13, 4), 3, 2),   # ImageNet's last pool: 13 → 6
    ((2, 9, 11, 3), 2, 2),
    ((2, 10, 10, 3), 3, 3),
    ((2, 8, 8, 2), 3, 1),
])
def test_slice_max_pool_gradient_equals_select_and_scatter(shape, window, stride):
  # ReLU zeros and a grid of equal positives make ties: both must send the
  # gradient to the first maximum of each window.
  x = jnp.maximum(jax.random.normal(jax.random.key(0), shape), 0.0)
  x = x.at[:, ::2, ::2].set(1.0)
  ref = nin.pool2d(x, 'max', window, stride)
  weights = jnp.arange(1.0, ref.size + 1).reshape(ref.shape)

  def loss(x, slice_grad):
    return jnp.sum(nin.pool2d(x, 'max', window, stride, slice_grad=slice_grad) * weights)

  np.testing.assert_array_equal(nin.pool2d(x, 'max', window, stride, slice_grad=True), ref)
  grad = jax.jit(jax.grad(loss), static_argnums=1)
  np.testing.assert_array_equal(grad(x, True), grad(x, False))


@pytest.mark.parametrize('chunks', [2, 4, 7])
def test_chunked_weight_gradient_equals_the_plain_one(chunks):
  # 2·6·5 = 60 pixels: 7 chunks do not divide them and become gcd(7, 60) = 1.
  x = jax.random.normal(jax.random.key(0), (2, 6, 5, 8))
  kernel = jax.random.normal(jax.random.key(1), (8, 3))
  dy = jax.random.normal(jax.random.key(2), (2, 6, 5, 3))

  def vjp(chunks):
    y, pullback = jax.vjp(lambda x, k: nin.channel_matmul(x, k, chunks), x, kernel)
    return (y, *pullback(dy))

  for got, want in zip(vjp(chunks), vjp(1), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_chunked_weight_gradient_in_bfloat16_keeps_the_kernel_dtype():
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 16))
  kernel = jax.random.normal(jax.random.key(1), (16, 8))
  dy = jax.random.normal(jax.random.key(2), (4, 8, 8, 8))
  _, pullback = jax.vjp(lambda k: nin.channel_matmul(
      x.astype(jnp.bfloat16), k, 4), kernel.astype(jnp.bfloat16))
  (got,) = pullback(dy.astype(jnp.bfloat16))
  assert got.dtype == jnp.bfloat16
  want = jnp.einsum('nhwc,nhwd->cd', x, dy)
  np.testing.assert_allclose(got.astype(jnp.float32), want, rtol=0.02, atol=0.2)


def test_cpu_weight_gradient_is_a_batched_matmul_over_chunks():
  layer = nin.ConvLayer(16, 8, 1, rngs=nnx.Rngs(0))
  assert layer.weight_grad_chunks == (nin.CPU_WEIGHT_GRAD_CHUNKS
                                      if jax.default_backend() == 'cpu' else 1)
  x = jnp.ones((8, 4, 4, 16))
  loss = lambda kernel, x: jnp.sum(nin.channel_matmul(x, kernel, 4) ** 2)
  hlo = jax.jit(jax.grad(loss)).lower(jnp.ones((16, 8)), x).compile().as_text()
  assert 'f32[4,16,8]' in hlo and 'lhs_batch_dims={0}' in hlo


def test_dropout_drops_at_the_rate_and_rescales():
  x = jnp.ones((64, 16, 16, 24))
  for rate in (0.5, 0.3):
    y = nin.dropout(x, rate, jax.random.key(0))
    kept = y != 0
    assert abs(float(kept.mean()) - (1 - rate)) < 0.01
    np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-6)
  np.testing.assert_array_equal(nin.dropout(x, 0.5, jax.random.key(0)),
                                nin.dropout(x, 0.5, jax.random.key(0)))
  assert nin.dropout(x, 0.0, jax.random.key(0)) is x


def test_cuda_convnet_dropout_zeroes_without_rescaling_and_scales_at_test():
  # The authors' DropoutNeuron: survivors keep their value in training, and at
  # test every unit is multiplied by 1 - p. Caffe's inverted form: survivors
  # are scaled by 1 / (1 - p) in training, test is the identity.
  x = jnp.full((64, 16, 16, 24), 3.0)
  key = jax.random.key(0)
  for rate in (0.5, 0.3):
    y = nin.dropout(x, rate, key, form='cuda_convnet')
    kept = y != 0
    assert abs(float(kept.mean()) - (1 - rate)) < 0.01
    np.testing.assert_array_equal(y[kept], 3.0)
    # Same mask as the inverted form, only the survivors' scale differs.
    np.testing.assert_array_equal(nin.dropout(x, rate, key) != 0, kept)
    np.testing.assert_allclose(nin.dropout_at_test(x, rate, 'cuda_convnet'),
                               3.0 * (1 - rate), rtol=1e-6)
    assert nin.dropout_at_test(x, rate, 'inverted') is x
  with pytest.raises(ValueError, match='dropout form'):
    nin.dropout(x, 0.5, key, form='caffe')


def test_dropout_form_scales_what_the_next_block_sees():
  # With zero biases (the paper init) a ReLU network is positively homogeneous,
  # so two dropout layers that pass (1 - p)× the inverted form's values give
  # logits (1 - p)² as large: in training (same masks) and at test.
  spec = architectures.scaled(architectures.mnist(), 0.125)
  x = jax.random.normal(jax.random.key(0), (2, 28, 28, 1))
  key = jax.random.key(3)
  nets = {form: nin.NIN(spec, dropout_rate=0.5, dropout_form=form, rngs=nnx.Rngs(0))
          for form in nin.DROPOUT_FORMS}
  no_dropout = nin.NIN(spec, dropout_rate=0.0, rngs=nnx.Rngs(0))
  inverted, cuda = nets['inverted'], nets['cuda_convnet']
  np.testing.assert_allclose(cuda(x, train=True, dropout_key=key),
                             0.25 * inverted(x, train=True, dropout_key=key),
                             rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(inverted(x), no_dropout(x), rtol=1e-6)
  np.testing.assert_allclose(cuda(x), 0.25 * no_dropout(x), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(cuda.class_maps(x).mean(axis=(1, 2)), cuda(x),
                             rtol=1e-5, atol=1e-7)


def test_gap_head_is_the_mean_of_the_last_maps():
  model = nin.NIN(architectures.scaled(architectures.mnist(), 0.25), rngs=nnx.Rngs(1))
  x = jax.random.normal(jax.random.key(0), (3, 28, 28, 1))
  maps = model.class_maps(x)
  assert maps.shape == (3, 7, 7, 10)
  np.testing.assert_allclose(model(x), maps.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_fc_head_parameter_count():
  gap = nin.count_params(abstract_model('cifar10'))
  fc = abstract_model('cifar10', head='fc', fc_hidden=(256,))
  # flatten 8×8×10 → 256 → 10, weights and biases.
  assert nin.count_params(fc) - gap == 640 * 256 + 256 + 256 * 10 + 10
  assert nin.count_params(abstract_model('cifar10', head='fc')) - gap == 640 * 10 + 10


def test_forward_cost_matches_the_paper():
  # About 223M multiply-adds per 32×32 CIFAR image, 1.1G per 224 ImageNet image.
  assert round(nin.macs_per_example(architectures.cifar10()) / 1e6) == 222
  assert round(nin.macs_per_example(architectures.imagenet()) / 1e8) == 11


def test_paper_init_is_gaussian_std_005_and_zero_bias():
  model = nin.NIN(architectures.cifar10(), rngs=nnx.Rngs(0))
  kernel = model.blocks[1].layers[0].kernel[...]
  assert abs(float(kernel.std()) - 0.05) < 0.002
  assert float(jnp.abs(model.blocks[1].layers[0].bias[...]).max()) == 0.0


def test_cifar100_init_is_the_authors_per_layer_stds():
  # NIN/cifar-100_def: conv1 0.001, cccp1 and cccp2 0.01, every other layer 0.05.
  expected = [[0.001, 0.01, 0.01], [0.05, 0.05, 0.05], [0.05, 0.05, 0.05]]
  model = nin.NIN(architectures.cifar100(), rngs=nnx.Rngs(0))
  measured = [[float(layer.kernel[...].std()) for layer in block.layers]
              for block in model.blocks]
  np.testing.assert_allclose(measured, expected, rtol=0.05)


def test_conventional_cnn_is_three_convolutions_and_a_local_layer():
  # Paper 4.6: three convolutions, then a locally connected layer with 10 maps
  # (16 cut to 10, one per class) for GAP; sizes as the preset infers them.
  model = abstract_model('cifar10_cnn')
  shapes = layer_shapes(model, (32, 32, 3))
  assert [shapes[f'block{i}.pool'] for i in (1, 2, 3)] == [
      (16, 16, 64), (8, 8, 64), (4, 4, 64)]
  assert shapes['block4.conv'] == (4, 4, 10)
  local = model.blocks[3].layers[0]
  assert isinstance(local, nin.LocalLayer) and local.kernel.shape == (4, 4, 9 * 64, 10)
  # conv1, conv2 and conv3 (weights + biases), then one kernel per output pixel.
  assert nin.count_params(model) == (
      (5 * 5 * 3 * 64 + 64) + 2 * (5 * 5 * 64 * 64 + 64) + (4 * 4 * 9 * 64 * 10 + 10))


def test_local_layer_with_equal_kernels_is_a_convolution():
  layer = nin.LocalLayer(3, 5, 3, input_hw=(6, 6), padding=1, rngs=nnx.Rngs(0))
  conv = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
  layer.kernel[...] = jnp.broadcast_to(conv.reshape(27, 5), (6, 6, 27, 5))
  x = jax.random.normal(jax.random.key(2), (2, 6, 6, 3))
  expected = jax.nn.relu(jax.lax.conv_general_dilated(
      x, conv, (1, 1), [(1, 1)] * 2, dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  np.testing.assert_allclose(layer(x, train=False), expected, rtol=1e-5, atol=1e-5)
  layer.kernel[...] = layer.kernel[...].at[0, 0].set(0.0)  # unshared: one pixel alone
  y = layer(x, train=False)
  np.testing.assert_allclose(y[:, 0, 0], 0.0)
  np.testing.assert_allclose(y[:, 1:, 1:], expected[:, 1:, 1:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('impl', ['conv', 'patches'])
def test_conv_formulations_agree_with_matmul(impl):
  spec = architectures.scaled(architectures.imagenet(), 1 / 16)  # stride-4 11×11 and 5×5, 3×3
  x = jax.random.normal(jax.random.key(0), (2, 67, 67, 3))

  def loss_and_grads(conv_impl):
    model = nin.NIN(spec, input_shape=(67, 67, 3), conv_impl=conv_impl,
                       rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    loss = lambda p: jnp.sum(nnx.merge(graphdef, p)(x) ** 2)
    return jax.value_and_grad(loss)(params)

  ref_loss, ref_grads = loss_and_grads('matmul')
  loss, grads = loss_and_grads(impl)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-4)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = nin.NIN(architectures.scaled(architectures.mnist(), 0.25), dtype=jnp.bfloat16,
                     rngs=nnx.Rngs(0))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  logits = model(jnp.ones((2, 28, 28, 1)))
  assert logits.dtype == jnp.float32
  ref = nin.NIN(architectures.scaled(architectures.mnist(), 0.25), rngs=nnx.Rngs(0))(
      jnp.ones((2, 28, 28, 1)))
  np.testing.assert_allclose(logits, ref, rtol=0.05, atol=0.02)


def test_dropout_is_keyed_and_off_at_eval():
  model = nin.NIN(architectures.scaled(architectures.mnist(), 0.25), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
  a = model(x, train=True, dropout_key=jax.random.key(1))
  b = model(x, train=True, dropout_key=jax.random.key(1))
  c = model(x, train=True, dropout_key=jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  np.testing.assert_array_equal(model(x), model(x))
  with pytest.raises(ValueError, match='dropout_key'):
    model(x, train=True)


def test_batch_norm_replaces_biases():
  model = abstract_model('mnist', batch_norm=True)
  layer = model.blocks[0].layers[0]
  assert layer.bias is None and layer.norm is not None


def test_input_too_small_is_a_clear_error():
  with pytest.raises(ValueError, match='too small'):
    nin.NIN(architectures.cifar10(), input_shape=(4, 4, 3), rngs=nnx.Rngs(0))


def test_param_roles_mark_the_logits_layer():
  model = nin.NIN(architectures.scaled(architectures.mnist(), 0.25), rngs=nnx.Rngs(0))
  roles = model.param_roles(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  last = roles['blocks'][2]['layers'][2]
  assert (last['kernel'], last['bias']) == ('last_weight', 'last_bias')
  assert roles['blocks'][0]['layers'][0] == {'kernel': 'weight', 'bias': 'bias'}
  fc = nin.NIN(architectures.scaled(architectures.mnist(), 0.25), head='fc', fc_hidden=(8,),
                  rngs=nnx.Rngs(0))
  roles = fc.param_roles(nnx.to_pure_dict(nnx.state(fc, nnx.Param)))
  assert roles['fc']['kernels'] == {0: 'weight', 1: 'last_weight'}
  assert roles['blocks'][2]['layers'][2]['kernel'] == 'weight'
