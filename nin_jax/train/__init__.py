"""Training: the config schema, the optimizer, the compiled steps, the loop, run history and inference."""
