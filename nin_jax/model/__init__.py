"""The paper's networks: architectures as data (presets), layers, and their assembly in Flax NNX."""
