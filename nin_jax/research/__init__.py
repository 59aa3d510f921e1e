"""Workflows on top of training: sweeps and trials, the head ablation, class maps, the Caffe zoo import, benchmarks."""
