"""Throughput and MFU of a config's train step, optionally against PyTorch.

    python experiments/benchmark.py --config=nin_jax/configs/cifar10.py \
        --compare_torch --config.optim.batch_size=128
    python experiments/benchmark.py --peak_tflops=989 --config.model.dtype=bfloat16
    # The loop's host overhead for 1, 8 and 32 steps per dispatch (tiny network):
    python experiments/benchmark.py --host_overhead \
        --config=nin_jax/configs/fashion_mnist.py \
        --config.model.width_multiplier=0.0625 --config.optim.batch_size=32 \
        --config.dataset.train_subset=2048 --config.dataset.test_subset=256
    python experiments/benchmark.py --warmup=5 --profile_steps=2:5 --profile_dir=/tmp/prof
"""

from nin_jax.cli import entry

if __name__ == '__main__':
  entry.benchmark()
