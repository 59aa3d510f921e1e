#!/usr/bin/env python
"""PyTorch peer of nin_jax's Network-in-Network model, for benchmarking only.

Standalone: depends on torch and the standard library, not on nin_jax. It
builds the NIN network (Lin, Chen & Yan, "Network In Network", 2013), trains
it on fixed synthetic tensors (so no data loading is timed) with the same
recipe nin_jax uses, and prints exactly one JSON line with the timings.

Model (every convolution is followed by a ReLU, the last 1x1 included):

  cifar10  (32x32x3 -> 10):
    conv5x5 192 p2 -> 1x1 160 -> 1x1 96  -> maxpool 3/2 ceil -> dropout 0.5   32 -> 16
    conv5x5 192 p2 -> 1x1 192 -> 1x1 192 -> maxpool 3/2 ceil -> dropout 0.5   16 -> 8
    conv3x3 192 p1 -> 1x1 192 -> 1x1 10  -> global average pool (8x8)
    966,986 parameters.

  imagenet (224x224x3 -> 1000):
    conv11x11 96 s4 p0 -> 1x1 96  -> 1x1 96  -> maxpool 3/2 ceil             224 -> 54 -> 27
    conv5x5 256 p2     -> 1x1 256 -> 1x1 256 -> maxpool 3/2 ceil             27 -> 13
    conv3x3 384 p1     -> 1x1 384 -> 1x1 384 -> maxpool 3/2 ceil -> dropout  13 -> 6
    conv3x3 1024 p1    -> 1x1 1024 -> 1x1 1000 -> global average pool (6x6)
    7,595,176 parameters.

Init: weights ~ N(0, 0.05^2), biases zero.
Step: SGD (momentum 0.9, lr 0.1, weight decay 1e-4 on all parameters),
cross-entropy on the logits, forward + backward + optimizer step.

Usage:
  python -m nin_jax.research.torch_nin --preset cifar10 --batch_size 128 --steps 10
  python -m nin_jax.research.torch_nin --preset imagenet --device cuda --dtype bfloat16 \
      --channels_last --compile

In-process:
  from nin_jax.research.torch_nin import run_benchmark
  result = run_benchmark(preset="cifar10", steps=5, threads=2)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# preset -> (input size, input channels, classes, expected parameter count)
PRESETS = {
    "cifar10": dict(image_size=32, in_channels=3, num_classes=10, params=966_986),
    "imagenet": dict(image_size=224, in_channels=3, num_classes=1000, params=7_595_176),
}

INIT_STD = 0.05
LEARNING_RATE = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
DROPOUT_RATE = 0.5


def _mlpconv(in_ch: int, out_chs, kernel: int, stride: int = 1, padding: int = 0):
    """One NIN "mlpconv" block: a kxk conv then two 1x1 convs, ReLU after each."""
    c1, c2, c3 = out_chs
    return [
        nn.Conv2d(in_ch, c1, kernel, stride=stride, padding=padding),
        nn.ReLU(inplace=True),
        nn.Conv2d(c1, c2, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c2, c3, 1),
        nn.ReLU(inplace=True),
    ]


def _maxpool():
    return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


class NIN(nn.Module):
    """Network in Network; input NCHW, output logits (N, num_classes)."""

    def __init__(self, preset: str = "cifar10"):
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        self.preset = preset
        if preset == "cifar10":
            layers = (
                _mlpconv(3, (192, 160, 96), 5, padding=2)
                + [_maxpool(), nn.Dropout(DROPOUT_RATE)]
                + _mlpconv(96, (192, 192, 192), 5, padding=2)
                + [_maxpool(), nn.Dropout(DROPOUT_RATE)]
                + _mlpconv(192, (192, 192, 10), 3, padding=1)
            )
        else:  # imagenet
            layers = (
                _mlpconv(3, (96, 96, 96), 11, stride=4, padding=0)
                + [_maxpool()]
                + _mlpconv(96, (256, 256, 256), 5, padding=2)
                + [_maxpool()]
                + _mlpconv(256, (384, 384, 384), 3, padding=1)
                + [_maxpool(), nn.Dropout(DROPOUT_RATE)]
                + _mlpconv(384, (1024, 1024, 1000), 3, padding=1)
            )
        self.features = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, mean=0.0, std=INIT_STD)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        # Global average pool over the remaining 8x8 (cifar10) / 6x6 (imagenet) map.
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(preset: str = "cifar10") -> NIN:
    """Builds the model and checks its parameter count against the paper's network."""
    model = NIN(preset)
    n = count_params(model)
    expected = PRESETS[preset]["params"]
    # Explicit raise rather than `assert` so the check survives `python -O`.
    if n != expected:
        raise AssertionError(f"{preset}: {n:,} parameters, expected {expected:,}")
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_benchmark(
    preset: str = "cifar10",
    batch_size: int = 128,
    steps: int = 10,
    warmup: int = 3,
    device: str = "cpu",
    dtype: str = "float32",
    channels_last: bool = False,
    compile: bool = False,  # noqa: A002 - mirrors the --compile flag
    threads: Optional[int] = None,
    seed: int = 0,
) -> dict:
    """Times `steps` training steps after `warmup` untimed ones; returns the result dict.

    `threads`, when given, sets torch's intra-op thread count for the duration of
    the call and restores the previous value afterwards.
    """
    _check_arguments(preset, batch_size, steps, warmup, device, dtype)

    prev_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        torch.manual_seed(seed)
        dev = torch.device(device)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format

        model = build_model(preset).to(dev, memory_format=memory_format)
        model.train()  # dropout active, as in training
        images, labels = _synthetic_batch(PRESETS[preset], batch_size, seed, dev, memory_format)
        train_step = _sgd_step(model, images, labels, dev, dtype, compile)
        times, loss = _time_steps(train_step, steps, warmup, dev)

        if not torch.isfinite(loss.detach()).item():
            raise RuntimeError(f"non-finite loss after training: {loss.item()}")

        median = statistics.median(times)
        return {
            "framework": "pytorch",
            "torch_version": torch.__version__,
            "preset": preset,
            "batch_size": batch_size,
            "device": device,
            "dtype": dtype,
            "channels_last": bool(channels_last),
            "compile": bool(compile),
            "threads": torch.get_num_threads(),
            "params": count_params(model),
            "step_time_s_median": median,
            "images_per_s": batch_size / median,
            "steps": steps,
        }
    finally:
        if threads is not None:
            torch.set_num_threads(prev_threads)


def _check_arguments(preset: str, batch_size: int, steps: int, warmup: int, device: str,
                     dtype: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"unknown dtype {dtype!r}; choose float32 or bfloat16")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; choose cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but torch.cuda.is_available() is False")
    if steps < 1 or warmup < 0 or batch_size < 1:
        raise ValueError("need steps >= 1, warmup >= 0, batch_size >= 1")


def _synthetic_batch(cfg: dict, batch_size: int, seed: int, dev, memory_format):
    """A fixed batch, made once: data loading is not part of the timing."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    s = cfg["image_size"]
    images = torch.randn(batch_size, cfg["in_channels"], s, s, generator=gen)
    labels = torch.randint(0, cfg["num_classes"], (batch_size,), generator=gen)
    return images.to(dev).contiguous(memory_format=memory_format), labels.to(dev)


def _sgd_step(model, images, labels, dev, dtype: str, compile: bool):  # noqa: A002
    """One SGD step of `model` on the fixed batch, as the authors' solver runs it."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    step_model = torch.compile(model) if compile else model
    use_autocast = dtype == "bfloat16"

    def train_step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_autocast):
            logits = step_model(images)
            loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        return loss

    return train_step


def _time_steps(train_step, steps: int, warmup: int, dev) -> tuple[list[float], torch.Tensor]:
    """Seconds of each of `steps` timed steps after `warmup` untimed ones, and the last loss."""
    for _ in range(warmup):
        train_step()
    _sync(dev)
    times = []
    for _ in range(steps):
        _sync(dev)
        t0 = time.perf_counter()
        loss = train_step()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return times, loss


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cifar10")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="bfloat16 = torch.autocast(bfloat16) on the chosen device; params stay float32",
    )
    p.add_argument("--channels_last", action="store_true", help="NHWC memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run_benchmark(**vars(args))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
