"""Training throughput: images per second and peak memory of full SCFT training steps.

    python bench/bench_train.py --preset tiny --batch 4 --size 64
    python bench/bench_train.py --preset paper --batch 16 --size 256      # on a GPU: both paths

One step is exactly the trainer's (`colord.training.train.loop.training_step`): generator forward
with the attention extras, the five losses (triplet, L1, LSGAN, perceptual and style on the
perceptual backbone), Adam step, then the discriminator's LSGAN step. Batches are synthetic
tensors made once, so data loading is not measured.

On a GPU two paths run in the same process, one after the other: "fp32" (fp32 eager, TF32 off,
contiguous tensors) and "fast" (the trainer's path: bf16 autocast, channels-last, cuDNN autotune,
TF32 for fp32 leftovers); the speed-up fast / fp32 is printed. On the CPU the trainer runs fp32
eager, so only that path is measured. Peak memory is the CUDA allocator's peak on a GPU and the
process's peak resident set on the CPU.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import replace

import torch

from colord.model import (
    PRESETS,
    SIZE_MULTIPLE,
    Discriminator,
    Generator,
    count_parameters,
    get_preset,
)
from colord.training.train.backbones import BACKBONES, load_feature_backbone
from colord.training.train.config import LossConfig
from colord.training.train.loop import autocast_factory, enable_cuda_fast_path, training_step
from colord.training.train.losses import SCFTLoss


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", choices=list(PRESETS))
    parser.add_argument("--batch", type=int, default=16, help="images per step")
    parser.add_argument("--size", type=int, default=256, help="square training size")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--backbone", default="auto", choices=BACKBONES)
    parser.add_argument("--vgg-weights", default=None, help="torchvision's VGG19 weights file")
    parser.add_argument("--no-triplet", action="store_true", help="as colord train --no-triplet")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.size % SIZE_MULTIPLE:
        parser.error(f"--size must be a multiple of {SIZE_MULTIPLE}")
    return args


def synthetic_batch(batch: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Random images in [-1, 1], a binary sketch and a shifted-identity correspondence."""
    generator = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    shift = size / 16  # one attention cell
    correspondence = torch.stack([xs + shift, ys], dim=-1).expand(batch, size, size, 2)
    tensors = {
        "sketch": torch.sign(torch.randn(batch, 1, size, size, generator=generator)),
        "reference": torch.rand(batch, 3, size, size, generator=generator) * 2 - 1,
        "target": torch.rand(batch, 3, size, size, generator=generator) * 2 - 1,
        "correspondence": correspondence.contiguous(),
        "has_reference": torch.ones(batch, dtype=torch.bool),
    }
    return {name: t.to(device) for name, t in tensors.items()}


def measure(args: argparse.Namespace, device: torch.device, path: str) -> dict[str, float]:
    """Throughput of one path: images over the wall time of all timed steps together."""
    fast = path == "fast"
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        if fast:
            enable_cuda_fast_path()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    memory_format = torch.channels_last if fast and cuda else torch.contiguous_format
    torch.manual_seed(0)
    preset = get_preset(args.preset)
    generator = Generator(preset).to(device, memory_format=memory_format).train()
    discriminator = Discriminator(preset).to(device, memory_format=memory_format).train()
    backbone = load_feature_backbone(args.backbone, args.vgg_weights).to(device)
    weights = replace(LossConfig(), triplet=0.0) if args.no_triplet else LossConfig()
    loss = SCFTLoss(
        generator,
        discriminator,
        discriminator,
        backbone,
        weights,
        attention_scale=generator.attention_scale,
        autocast=autocast_factory(device, bf16=fast and cuda),
    )
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    batch = synthetic_batch(args.batch, args.size, device)
    for name in ("sketch", "reference", "target"):
        batch[name] = batch[name].contiguous(memory_format=memory_format)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        training_step(loss, batch, opt_g, opt_d)
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        stats = training_step(loss, batch, opt_g, opt_d)
    sync()
    elapsed = time.perf_counter() - start
    if not torch.isfinite(stats["G/total"]):
        raise RuntimeError(f"{path}: the loss is not finite")
    if cuda:
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # ru_maxrss is KiB on Linux
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "img_per_s": args.steps * args.batch / elapsed,
        "ms_per_step": 1000 * elapsed / args.steps,
        "peak_mib": peak_mib,
        "backbone": backbone.name,
        "parameters": count_parameters(generator),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    request = args.device
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(request)
    paths = ["fp32", "fast"] if device.type == "cuda" else ["fp32"]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"training step: preset {args.preset}, batch {args.batch}, {args.size}x{args.size}, "
        f"{args.steps} timed steps after {args.warmup} warm-up, on {where} "
        f"({torch.get_num_threads()} threads), torch {torch.__version__}"
    )
    results = {}
    for path in paths:
        results[path] = result = measure(args, device, path)
        memory = "CUDA peak allocated" if device.type == "cuda" else "peak RSS"
        print(
            f"  {path:5s} {result['img_per_s']:9.2f} img/s  {result['ms_per_step']:9.1f} ms/step  "
            f"{memory} {result['peak_mib']:8.0f} MiB  (G {result['parameters'] / 1e6:.2f} M "
            f"params, backbone {result['backbone']})"
        )
    if len(results) == 2:
        ratio = results["fast"]["img_per_s"] / results["fp32"]["img_per_s"]
        print(f"  speed-up fast / fp32 eager: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
