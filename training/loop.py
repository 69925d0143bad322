"""`train(cfg)`: the SCFT training loop, read top to bottom in the order it runs.

Set up (process group, seeds, data, networks, optimizers, resume state), then one `while`: set the
learning rate, phase G (generator losses, step), phase D (discriminator loss, step), then the
maintenance that falls due at this step (logs, images, checkpoints). Rank 0 does all the I/O.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from colord.model import Discriminator, Generator, get_preset, load_checkpoint, save_checkpoint
from colord.model.line_scale import LINE_WIDTH_KEY
from colord.model.networks import initialize_weights

from . import distributed
from .augment import ReferenceMotion
from .backbones import load_feature_backbone
from .config import ConfigError, TrainConfig
from .dataset import ColorizationDataset
from .losses import SCFTLoss
from .visualize import RunLogger, attention_figure, image_grid, spread_positions

logger = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"  # everything needed to continue the run exactly
GENERATOR_FILE = "generator.safetensors"  # the exported model, for `colord serve --model`
STATE_FORMAT = 1
# Sections that must not change between a run and its resumption (run.* may: max_steps, logging).
FIXED_SECTIONS = ("data", "model", "loss", "optim")


@dataclass
class TrainResult:
    generator: Generator
    discriminator: Discriminator
    step: int
    backbone: str
    run_dir: Path


def train(cfg: TrainConfig, *, resume: bool = False) -> TrainResult:
    """Train (or continue training) SCFT as `cfg` says; returns the final networks on every rank."""
    dist_info = distributed.init_distributed(cfg.run.device)
    try:
        return _train(cfg, dist_info, resume)
    finally:
        distributed.shutdown(dist_info)


def _train(cfg: TrainConfig, dist_info: distributed.DistInfo, resume: bool) -> TrainResult:
    device, is_main, world = dist_info.device, dist_info.is_main, dist_info.world_size
    run_dir = Path(cfg.run.out)
    cuda = device.type == "cuda"
    memory_format = torch.channels_last if cuda and cfg.run.channels_last else torch.preserve_format
    seed_everything(cfg.run.seed + dist_info.rank)
    if cuda:
        enable_cuda_fast_path()

    # --- data: each sample is fixed by (seed, epoch, index), the order by (seed, epoch) ---
    if cfg.optim.batch_size % world:
        raise ConfigError(
            f"optim.batch_size {cfg.optim.batch_size} is not divisible by {world} ranks"
        )
    rank_batch = cfg.optim.batch_size // world
    dataset = make_dataset(cfg)
    sampler = DistributedSampler(
        dataset, num_replicas=world, rank=dist_info.rank, shuffle=True, seed=cfg.run.seed
    )
    steps_per_epoch = len(sampler) // rank_batch
    if steps_per_epoch == 0:
        raise ConfigError(
            f"{len(dataset)} usable images give no full batch of {cfg.optim.batch_size}: "
            "add images or lower optim.batch_size"
        )
    total_epochs = cfg.optim.constant_epochs + cfg.optim.decay_epochs
    total_steps = round(total_epochs * steps_per_epoch)
    stop_at = min(total_steps, cfg.run.max_steps) if cfg.run.max_steps else total_steps

    # --- networks, backbone, optimizers ---
    line_width = dataset.median_line_width() if is_main else None
    generator, cfg = make_generator(cfg)
    preset = generator.preset
    discriminator = Discriminator(preset)
    generator.to(device, memory_format=memory_format).train()
    discriminator.to(device, memory_format=memory_format).train()
    backbone = load_feature_backbone(cfg.loss.backbone, cfg.loss.vgg_weights or None).to(device)
    betas = (cfg.optim.beta1, cfg.optim.beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.optim.lr_g, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.optim.lr_d, betas=betas)

    step = 0
    if resume:
        step = load_resume_state(run_dir, cfg, generator, discriminator, opt_g, opt_d, dist_info)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.write_json(run_dir / "config.json")
        logger.info(
            "training %s (%s aggregation) on %d images, %d steps/epoch, %d steps; backbone %s; "
            "%d rank(s) on %s",
            preset.name,
            preset.aggregation,
            len(dataset),
            steps_per_epoch,
            total_steps,
            backbone.name,
            world,
            device,
        )

    g_train = distributed.wrap(generator, dist_info)
    d_train = distributed.wrap(discriminator, dist_info)
    loss = SCFTLoss(
        g_train,
        d_train,
        discriminator,
        backbone,
        cfg.loss,
        attention_scale=generator.attention_scale,
        autocast=autocast_factory(device, bf16=cuda and cfg.run.bf16),
    )
    run_logger = RunLogger(run_dir, enabled=is_main)
    if is_main:
        logger.info("logging to %s in %s", run_logger.backend, run_dir)
    progress = Progress(total=stop_at, initial=step, enabled=is_main)
    window_start, window_steps = time.perf_counter(), 0
    deadline = WallClockBudget(cfg.run.max_minutes, dist_info)

    # --- the loop ---
    while step < stop_at:
        epoch, offset = divmod(step, steps_per_epoch)
        for batch in epoch_loader(dataset, sampler, epoch, offset * rank_batch, rank_batch, cfg):
            lr_factor = learning_rate_factor(step, steps_per_epoch, cfg)
            set_learning_rate(opt_g, cfg.optim.lr_g * lr_factor)
            set_learning_rate(opt_d, cfg.optim.lr_d * lr_factor)
            batch = to_device(batch, device, memory_format)

            stats = training_step(loss, batch, opt_g, opt_d)
            step += 1
            window_steps += 1
            if deadline.spent():
                stop_at = step  # this step logs, draws and checkpoints as the last one
            if step % cfg.run.log_every == 0 or step == stop_at:
                stats = distributed.mean_across_ranks(stats, dist_info)
                elapsed = time.perf_counter() - window_start
                stats["speed/img_per_s"] = window_steps * cfg.optim.batch_size / elapsed
                stats["lr/g"] = cfg.optim.lr_g * lr_factor
                stats["epoch"] = step / steps_per_epoch
                run_logger.scalars(step, stats)
                progress.update(step, stats)
                window_start, window_steps = time.perf_counter(), 0
            if is_main and (step % cfg.run.image_every == 0 or step == stop_at):
                log_images(run_logger, step, generator, batch)
            if step % cfg.run.checkpoint_every == 0 or step == stop_at:
                save_run_state(
                    run_dir, cfg, step, generator, discriminator, opt_g, opt_d, backbone.name,
                    line_width, dist_info,
                )  # fmt: skip
            if step >= stop_at:
                break

    progress.close()
    run_logger.close()
    return TrainResult(generator, discriminator, step, backbone.name, run_dir)


def training_step(
    loss: SCFTLoss,
    batch: dict[str, Any],
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
) -> dict[str, torch.Tensor]:
    """Phase G (generator losses, Adam step), then phase D on the same batch and output."""
    opt_g.zero_grad(set_to_none=True)
    g_result = loss.accumulate("G", batch)
    opt_g.step()
    opt_d.zero_grad(set_to_none=True)
    d_result = loss.accumulate("D", batch, fake=g_result.fake)
    opt_d.step()
    return {**g_result.stats, **d_result.stats}


# ---- setup --------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def enable_cuda_fast_path() -> None:
    """Static training shapes let cuDNN pick its fastest kernels; fp32 leftovers may use TF32."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def autocast_factory(device: torch.device, *, bf16: bool) -> Callable[[], AbstractContextManager]:
    """bf16 autocast on CUDA when asked for; plain fp32 otherwise."""
    if bf16:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def make_dataset(cfg: TrainConfig) -> ColorizationDataset:
    if not cfg.data.images:
        raise ConfigError("no training images: set data.images (colord train --data DIR)")
    try:
        return ColorizationDataset(
            cfg.data.images,
            size=cfg.data.size,
            line_art_dir=cfg.data.lineart or None,
            seed=cfg.run.seed,
            zero_reference_probability=cfg.data.zero_reference_ratio,
            min_crop_fraction=cfg.data.min_crop_fraction,
            warp_max_displacement=cfg.data.warp_max_displacement,
            reference_motion=ReferenceMotion(
                cfg.data.reference_shift, cfg.data.reference_zoom, cfg.data.reference_rotation
            ),
        )
    except (FileNotFoundError, ValueError) as error:  # missing folder, no usable image, ...
        raise ConfigError(str(error)) from error


def make_generator(cfg: TrainConfig) -> tuple[Generator, TrainConfig]:
    """A fresh generator, or the one in `model.init` to fine-tune (its architecture wins, and the
    returned config says so)."""
    if not cfg.model.init:
        preset = dataclasses.replace(
            get_preset(cfg.model.preset),
            aggregation=cfg.model.aggregation,
            attention_stride=cfg.model.attention_stride,
            color_hint=cfg.model.color_hint,
        )
        generator = Generator(preset)  # initialised as the paper says
        if cfg.model.weight_init != "paper":
            initialize_weights(generator, cfg.model.weight_init)
        return generator, cfg
    loaded = load_checkpoint(cfg.model.init)
    if loaded.preset.aggregation != "scft" and cfg.loss.triplet:
        raise ConfigError(
            f"{cfg.model.init} uses {loaded.preset.aggregation!r} aggregation: set loss.triplet = 0"
        )
    model = dataclasses.replace(
        cfg.model,
        preset=loaded.preset.name,
        aggregation=loaded.preset.aggregation,
        attention_stride=loaded.preset.attention_stride,
        color_hint=loaded.preset.color_hint,
    )
    return loaded.generator.train(), dataclasses.replace(cfg, model=model)


class SkipSampler(Sampler[int]):
    """The epoch's index order from `sampler`, less the first `skip` (already trained on)."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.sampler)[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]


def epoch_loader(
    dataset: ColorizationDataset,
    sampler: DistributedSampler,
    epoch: int,
    skip: int,
    rank_batch: int,
    cfg: TrainConfig,
) -> DataLoader:
    """This rank's batches of `epoch`, from sample `skip` on. Built per epoch so the worker
    processes start with the epoch set, and seeded so no global random state is consumed."""
    dataset.set_epoch(epoch)
    sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_size=rank_batch,
        sampler=SkipSampler(sampler, skip),
        num_workers=cfg.data.workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(cfg.run.seed * 100_003 + epoch),
    )


def to_device(
    batch: dict[str, Any], device: torch.device, memory_format: torch.memory_format
) -> dict[str, Any]:
    moved = {}
    for name, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if value.ndim == 4 and name != "correspondence":
                value = value.contiguous(memory_format=memory_format)
        moved[name] = value
    return moved


class WallClockBudget:
    """`run.max_minutes` of training time from here; every rank agrees on when it is spent."""

    def __init__(self, minutes: float, dist_info: distributed.DistInfo) -> None:
        self.end = time.monotonic() + minutes * 60 if minutes else None
        self.dist_info = dist_info

    def spent(self) -> bool:
        if self.end is None:
            return False
        over = torch.tensor(float(time.monotonic() >= self.end), device=self.dist_info.device)
        return bool(distributed.mean_across_ranks({"over": over}, self.dist_info)["over"] > 0)


# ---- the schedule -------------------------------------------------------------------------------


def learning_rate_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """1 for `constant_epochs`, then linear to 0 over `decay_epochs` (paper: 100 + 100)."""
    epoch = step / steps_per_epoch
    if epoch < cfg.optim.constant_epochs:
        return 1.0
    if cfg.optim.decay_epochs == 0:
        return 0.0
    return max(0.0, 1.0 - (epoch - cfg.optim.constant_epochs) / cfg.optim.decay_epochs)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# ---- maintenance: logs, images, checkpoints -----------------------------------------------------


class Progress:
    """A tqdm bar with the latest losses and img/s, or a plain line per log when tqdm is absent."""

    def __init__(self, *, total: int, initial: int, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
        self.total = total

    def update(self, step: int, stats: dict[str, float]) -> None:
        if not self.enabled:
            return
        shown = {k.split("/")[-1]: v for k, v in stats.items() if k.startswith(("G/", "D/loss"))}
        text = " ".join(f"{k}={v:.3g}" for k, v in shown.items())
        text += f" img/s={stats['speed/img_per_s']:.1f}"
        if self.bar is None:
            print(f"step {step} epoch {stats['epoch']:.2f} {text}", flush=True)
            return
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix_str(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@torch.no_grad()
def log_images(
    run_logger: RunLogger, step: int, generator: Generator, batch: dict[str, Any], count: int = 4
) -> None:
    """sketch | reference | output | ground truth, and the attention of a few sketch positions."""
    sketch, reference = batch["sketch"][:count], batch["reference"][:count]
    was_training = generator.training
    generator.eval()
    try:
        output, extras = generator(sketch, reference, return_extras=True)
    finally:
        generator.train(was_training)
    grid = image_grid([sketch, reference, output, batch["target"][:count]])
    run_logger.image(step, "samples", grid)
    if extras.attention is not None:
        with_reference = batch["has_reference"][:count].nonzero().flatten()
        i = int(with_reference[0]) if len(with_reference) else 0
        figure = attention_figure(
            sketch[i],
            reference[i],
            extras.attention[i],
            extras.sketch_grid,
            extras.reference_grid,
            spread_positions(extras.sketch_grid),
        )
        run_logger.image(step, "attention", figure)


def rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def save_run_state(
    run_dir: Path,
    cfg: TrainConfig,
    step: int,
    generator: Generator,
    discriminator: Discriminator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    backbone: str,
    line_width: float | None,
    dist_info: distributed.DistInfo,
) -> None:
    """The resume state (atomically: a temporary file, then a rename) and the exported generator.

    Every rank's random state is gathered first, so all ranks must call this.
    """
    rng_states = distributed.gather_objects(rng_state(dist_info.device), dist_info)
    if not dist_info.is_main:
        return
    state = {
        "format": STATE_FORMAT,
        "step": step,
        "world_size": dist_info.world_size,
        "config": cfg.to_dict(),
        "backbone": backbone,
        "generator": generator.state_dict(),
        "discriminator": discriminator.state_dict(),
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict(),
        "rng": rng_states,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    partial = run_dir / (RESUME_FILE + ".partial")
    torch.save(state, partial)
    os.replace(partial, run_dir / RESUME_FILE)
    metadata = {
        "backbone": backbone,
        "step": step,
        "trained_by": "colord train",
        "config": cfg.to_dict(),
    }
    if line_width is not None:
        metadata[LINE_WIDTH_KEY] = line_width
    save_checkpoint(run_dir / GENERATOR_FILE, generator, metadata=metadata)


def load_resume_state(
    run_dir: Path,
    cfg: TrainConfig,
    generator: nn.Module,
    discriminator: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    dist_info: distributed.DistInfo,
) -> int:
    """Restore networks, optimizers and random state from the run folder; returns the step."""
    path = run_dir / RESUME_FILE
    if not path.is_file():
        raise ConfigError(f"nothing to resume: {path} does not exist")
    # on the CPU: random states must stay CPU tensors; load_state_dict moves the rest to the device
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise ConfigError(f"{path} has state format {state.get('format')}, expected {STATE_FORMAT}")
    saved, current = state["config"], cfg.to_dict()
    changed = [
        f"{section}.{key}"
        for section in FIXED_SECTIONS
        for key in current[section]
        if saved[section].get(key) != current[section][key]
    ]
    if changed:
        raise ConfigError(f"cannot resume {path} with a changed config: {', '.join(changed)}")
    generator.load_state_dict(state["generator"])
    discriminator.load_state_dict(state["discriminator"])
    opt_g.load_state_dict(state["opt_g"])
    opt_d.load_state_dict(state["opt_d"])
    if state["world_size"] == dist_info.world_size:
        set_rng_state(state["rng"][dist_info.rank], dist_info.device)
    else:
        logger.warning(
            "resuming on %d ranks a run saved on %d: random streams restart",
            dist_info.world_size,
            state["world_size"],
        )
    return int(state["step"])
