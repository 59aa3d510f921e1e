"""The head ablation's recipe on real data: Fashion-MNIST, small training set, 3 seeds.

Not a paper row. The paper's ablation (Table 5, CIFAR-10, no augmentation)
cannot run here, so this asks the same question on Fashion-MNIST with a
setup where a head can overfit: the MNIST NIN (as in fashion_mnist.py: batch
norm, He init, no dropout between blocks, so the head is the only
difference), 6,000 training images (a fixed, class-mixed subset), no
augmentation (as Table 5), SGD momentum 0.9 at batch 128, lr 0.1 cosine to
0 over 20 epochs, L2 1e-4; evaluated on the full 10k test split every 5
epochs. The three heads are GAP, FC (one linear layer on the 7×7×10 maps)
and FC with dropout 0.5 before it; each runs with seeds 0, 1 and 2:

    python experiments/ablation_head.py --config=nin_jax/configs/fashion_mnist_ablation.py \
        --workdir=workdirs/ablation_fashion_mnist --seeds=0,1,2
"""

from nin_jax.configs import fashion_mnist


def get_config():
  config = fashion_mnist.get_config()
  config.dataset.train_subset = 6000
  config.num_epochs = 20.0
  config.eval_every_epochs = 5.0
  config.log_every_steps = 46  # One epoch: 6,000 // 128 steps.
  config.checkpoint_every_steps = 230  # Every 5 epochs.
  return config
