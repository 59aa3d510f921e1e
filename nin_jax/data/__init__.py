"""Where images come from and how they reach a step: sources (IDX, TFDS, streamed ImageNet), preprocessing, augmentation, and each process's share of a batch."""
