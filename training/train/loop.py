"""`train(cfg)`: the SCFT training loop, read top to bottom in the order it runs.

Set up (process group, seeds, data, networks, optimizers, resume state), then one `while`: set the
learning rate, phase G (generator losses, step), phase D (discriminator loss, step), then the
maintenance that falls due at this step (logs, images, checkpoints). Rank 0 does all the I/O.

A run stops at the end of its schedule, at `run.max_steps`, when `run.max_minutes` are spent, or at
SIGINT/SIGTERM, always after a whole step and with a checkpoint that `resume=True` continues.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import random
import shutil
import signal
import tempfile
import threading
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
from colord.training.samples.augment import ReferenceMotion
from colord.training.samples.dataset import ColorizationDataset
from colord.training.train import distributed
from colord.training.train.backbones import load_feature_backbone
from colord.training.train.config import ConfigError, TrainConfig
from colord.training.train.losses import SCFTLoss
from colord.training.train.visualize import (
    RunLogger,
    attention_figure,
    image_grid,
    spread_positions,
)

logger = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"  # everything needed to continue the run exactly
GENERATOR_FILE = "generator.safetensors"  # the exported model, for `colord serve --model`
DATA_REPORT_FILE = "data-report.txt"  # every skipped or unpaired file of the data, with why
STATE_FORMAT = 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Sections that must not change between a run and its resumption (run.* may: max_steps, logging).
FIXED_SECTIONS = ("data", "model", "loss", "optim")
# Compared as the files they name, so `./art`, `art` and `/abs/art` are the same folder.
PATH_KEYS = ("data.images", "data.lineart", "model.init", "loss.vgg_weights")
# What `extend=True` lets a resumed run change: the length of its learning-rate schedule.
SCHEDULE_KEYS = ("optim.constant_epochs", "optim.decay_epochs")


class CheckpointWriteError(RuntimeError):
    """A checkpoint that could not be written; the previous one is still in place."""


@dataclass
class TrainResult:
    generator: Generator
    discriminator: Discriminator
    step: int
    backbone: str
    run_dir: Path
    stopped_by: int | None = None  # the signal that stopped the run early, if one did


@dataclass(frozen=True)
class ResumeOptions:
    """What a resumed run may differ in from the state it continues."""

    accept_changed_data: bool = False  # train on a data folder whose files changed, reported
    extend: bool = False  # a changed schedule length (optim.constant_epochs, decay_epochs)


def train(
    cfg: TrainConfig, *, resume: bool = False, options: ResumeOptions = ResumeOptions()
) -> TrainResult:
    """Train (or continue training) SCFT as `cfg` says; returns the final networks on every rank."""
    dist_info = distributed.init_distributed(cfg.run.device)
    try:
        result = _train(cfg, dist_info, resume, options)
        distributed.barrier(dist_info)  # no rank leaves while another still talks to it
        return result
    finally:
        # The DDP wrappers sit in reference cycles; freed only at interpreter exit, after the
        # group is gone, gloo's threads could still hold their work there and abort the process.
        gc.collect()
        distributed.shutdown(dist_info)


def _train(
    cfg: TrainConfig, dist_info: distributed.DistInfo, resume: bool, options: ResumeOptions
) -> TrainResult:
    device, is_main, world = dist_info.device, dist_info.is_main, dist_info.world_size
    run_dir = Path(cfg.run.out)
    if is_main:
        check_writable(run_dir)
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

    fingerprint = dataset.fingerprint()
    if is_main:
        (run_dir / DATA_REPORT_FILE).write_text(dataset.report())

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
        step = load_resume_state(
            run_dir, cfg, generator, discriminator, opt_g, opt_d, dist_info,
            fingerprint=fingerprint, steps_per_epoch=steps_per_epoch, options=options,
        )  # fmt: skip
    if is_main:
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
        if stop_at < total_steps or cfg.run.max_minutes:
            budget = f" or after {cfg.run.max_minutes:g} minutes" if cfg.run.max_minutes else ""
            logger.info("this run stops at step %d%s, with a checkpoint", stop_at, budget)

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
    control = RunControl(cfg.run.max_minutes, cfg.run.checkpoint_minutes, dist_info)
    progress = Progress(
        total=stop_at,
        initial=step,
        images_per_step=cfg.optim.batch_size,
        end=control.end,
        enabled=is_main,
    )
    window_start, window_steps = time.perf_counter(), 0
    # a generator fine-tuned against a fresh discriminator starts gently (OptimConfig)
    warmup = cfg.optim.finetune_warmup_steps if cfg.model.init else 0
    if warmup and step < warmup and is_main:
        logger.info(
            "fine-tune warm-up: G's learning rate, λ_adv and batch-norm momentum rise over %d "
            "steps",
            warmup,
        )
    norm_momenta = batch_norm_momenta(generator)
    state = RunState(
        run_dir, cfg, generator, discriminator, opt_g, opt_d, backbone.name, line_width,
        fingerprint, steps_per_epoch, dist_info,
    )  # fmt: skip

    # --- the loop ---
    with stop_signals(control):
        while step < stop_at:
            epoch, offset = divmod(step, steps_per_epoch)
            loader = epoch_loader(dataset, sampler, epoch, offset * rank_batch, rank_batch, cfg)
            for batch in loader:
                lr_factor = learning_rate_factor(step, steps_per_epoch, cfg)
                ramp = min(1.0, step / warmup) if warmup else 1.0
                set_learning_rate(opt_g, cfg.optim.lr_g * lr_factor * ramp)
                set_learning_rate(opt_d, cfg.optim.lr_d * lr_factor)
                if warmup:
                    loss.weights = dataclasses.replace(cfg.loss, adv=cfg.loss.adv * ramp)
                    for norm, momentum in norm_momenta.items():
                        norm.momentum = momentum * ramp
                batch = to_device(batch, device, memory_format)

                stats = training_step(loss, batch, opt_g, opt_d)
                step += 1
                window_steps += 1
                progress.advance(step)
                stop, checkpoint_due = control.check()
                if stop:
                    stop_at = step  # this step logs, draws and checkpoints as the last one
                if step % cfg.run.log_every == 0 or step == stop_at:
                    stats = distributed.mean_across_ranks(stats, dist_info)
                    elapsed = time.perf_counter() - window_start
                    stats["speed/img_per_s"] = window_steps * cfg.optim.batch_size / elapsed
                    stats["lr/g"] = cfg.optim.lr_g * lr_factor * ramp
                    stats["epoch"] = step / steps_per_epoch
                    run_logger.scalars(step, stats)
                    progress.log(step, stats)
                    window_start, window_steps = time.perf_counter(), 0
                if is_main and (step % cfg.run.image_every == 0 or step == stop_at):
                    log_images(run_logger, step, generator, batch)
                if step == stop_at:
                    state.save(step)  # the last one: a failure is the run's error
                elif step % cfg.run.checkpoint_every == 0 or checkpoint_due:
                    try:
                        state.save(step)
                    except CheckpointWriteError as error:  # training goes on; the next may work
                        logger.error("%s", error)
                    control.checkpointed()
                if step >= stop_at:
                    break

    progress.close()
    run_logger.close()
    if control.signal is not None and is_main:
        logger.warning(
            "stopped by %s at step %d with a checkpoint: continue with --resume",
            signal.Signals(control.signal).name,
            step,
        )
    return TrainResult(generator, discriminator, step, backbone.name, run_dir, control.signal)


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


def batch_norm_momenta(module: nn.Module) -> dict[nn.modules.batchnorm._BatchNorm, float]:
    """Each batch norm of `module` with its running-statistics momentum. The fine-tune warm-up
    scales them: the starting model's statistics would otherwise move a third of the way to
    those of the first four batches of new art, whatever the learning rate."""
    return {
        norm: norm.momentum
        for norm in module.modules()
        if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.momentum is not None
    }


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
        worker_init_fn=ignore_stop_signals,
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


class RunControl:
    """When to stop early (`run.max_minutes` spent, or SIGINT/SIGTERM received) and when a
    checkpoint falls due by time; every rank agrees, so all stop after the same step."""

    def __init__(
        self, max_minutes: float, checkpoint_minutes: float, dist_info: distributed.DistInfo
    ) -> None:
        now = time.monotonic()
        self.end = now + max_minutes * 60 if max_minutes else None
        self.checkpoint_seconds = checkpoint_minutes * 60
        self.last_checkpoint = now
        self.signal: int | None = None  # set by `stop_signals`' handler
        self.dist_info = dist_info

    def check(self) -> tuple[bool, bool]:
        """(stop after this step, checkpoint after this step), the same on every rank."""
        now = time.monotonic()
        flags = {
            "stop": self.signal is not None or (self.end is not None and now >= self.end),
            "checkpoint": bool(self.checkpoint_seconds)
            and now - self.last_checkpoint >= self.checkpoint_seconds,
        }
        if not self.dist_info.enabled:
            return flags["stop"], flags["checkpoint"]
        tensors = {
            k: torch.tensor(float(v), device=self.dist_info.device) for k, v in flags.items()
        }
        agreed = distributed.mean_across_ranks(tensors, self.dist_info)
        return agreed["stop"] > 0, agreed["checkpoint"] > 0

    def checkpointed(self) -> None:
        self.last_checkpoint = time.monotonic()


@contextlib.contextmanager
def stop_signals(control: RunControl) -> Iterator[None]:
    """While training, SIGINT and SIGTERM ask for a stop after the current step, with a
    checkpoint; a second signal stops at once, without one (KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handle(signum: int, frame: object) -> None:
        if control.signal is not None:
            raise KeyboardInterrupt
        control.signal = signum
        logger.warning(
            "%s: stopping after this step with a checkpoint (again to stop without one)",
            signal.Signals(signum).name,
        )

    previous = {number: signal.signal(number, handle) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C (sent to the whole process group) to the main process,
    which finishes its step and saves; a worker that died of it would end the run unsaved."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)


def check_writable(run_dir: Path) -> None:
    """Refuse a run folder that cannot be created or written before any work is done."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as error:
        raise ConfigError(f"cannot write to the run folder {run_dir}: {error.strerror}") from None


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
    """A tqdm bar that moves every step, with img/s, the time left (the budget's, when it ends
    first) and the latest losses; a plain line per log when tqdm is absent."""

    def __init__(
        self,
        *,
        total: int,
        initial: int,
        images_per_step: int,
        end: float | None,
        enabled: bool,
    ) -> None:
        self.enabled = enabled
        self.images_per_step = images_per_step
        self.end = end  # time.monotonic() when the wall-clock budget runs out
        self.losses = ""
        self.last = time.monotonic()
        self.seconds_per_step: float | None = None
        self.bar = None
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def advance(self, step: int) -> None:
        if self.bar is None:
            return
        now = time.monotonic()
        elapsed, self.last = now - self.last, now
        previous = self.seconds_per_step
        self.seconds_per_step = elapsed if previous is None else 0.8 * previous + 0.2 * elapsed
        self.bar.update(step - self.bar.n)
        self._show(now)

    def log(self, step: int, stats: dict[str, float]) -> None:
        if not self.enabled:
            return
        shown = {k.split("/")[-1]: v for k, v in stats.items() if k.startswith(("G/", "D/loss"))}
        self.losses = " ".join(f"{k}={v:.3g}" for k, v in shown.items())
        if self.bar is None:
            speed = f"img/s={stats['speed/img_per_s']:.1f}"
            print(f"step {step} epoch {stats['epoch']:.2f} {self.losses} {speed}", flush=True)
            return
        self._show(time.monotonic())

    def _show(self, now: float) -> None:
        text = self.losses
        if self.seconds_per_step:
            text += f" img/s={self.images_per_step / self.seconds_per_step:.1f}"
            steps_left = (self.bar.total - self.bar.n) * self.seconds_per_step
            if self.end is not None and self.end - now < steps_left:
                text += f" budget ends in {_clock(self.end - now)}"
        self.bar.set_postfix_str(text.strip(), refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(max(0, round(seconds)), 60)
    return f"{minutes}:{seconds:02d}"


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


@dataclass
class RunState:
    """What a checkpoint holds, to save it at any step: the networks, the optimizers, and what
    a resumed run checks (its config, the paths it names, the data's fingerprint)."""

    run_dir: Path
    cfg: TrainConfig
    generator: Generator
    discriminator: Discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    backbone: str
    line_width: float | None
    fingerprint: dict[str, int]
    steps_per_epoch: int
    dist_info: distributed.DistInfo

    def save(self, step: int) -> None:
        """The resume state and the exported generator, each whole or not at all: both are
        written to a staging folder (after a free-space check), flushed to the disk, then renamed
        over the previous ones. On a failure the previous checkpoint stays, the staging folder
        goes, and `CheckpointWriteError` says why in one line.

        Every rank's random state is gathered first, so all ranks must call this.
        """
        rng_states = distributed.gather_objects(rng_state(self.dist_info.device), self.dist_info)
        if not self.dist_info.is_main:
            return
        cfg = self.cfg.to_dict()
        state = {
            "format": STATE_FORMAT,
            "step": step,
            "world_size": self.dist_info.world_size,
            "config": cfg,
            "paths": resolved_paths(self.cfg),
            "data": self.fingerprint,
            "steps_per_epoch": self.steps_per_epoch,
            "backbone": self.backbone,
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": rng_states,
        }
        metadata = {"backbone": self.backbone, "step": step, "trained_by": "colord train"}
        metadata["config"] = cfg
        if self.line_width is not None:
            metadata[LINE_WIDTH_KEY] = self.line_width
        staging = self.run_dir / ".checkpoint.partial"
        try:
            check_free_space(self.run_dir, tensor_bytes(state) + tensor_bytes(state["generator"]))
            shutil.rmtree(staging, ignore_errors=True)  # left by a killed process
            staging.mkdir()
            torch.save(state, staging / RESUME_FILE)
            save_checkpoint(staging / GENERATOR_FILE, self.generator, metadata=metadata)
            for name in (RESUME_FILE, GENERATOR_FILE):
                fsync(staging / name)
            for name in (RESUME_FILE, GENERATOR_FILE):
                os.replace(staging / name, self.run_dir / name)
            fsync(self.run_dir)
        except (OSError, RuntimeError) as error:  # torch.save reports a full disk as RuntimeError
            reason = error.strerror if isinstance(error, OSError) else str(error).splitlines()[0]
            raise CheckpointWriteError(
                f"checkpoint of step {step} not written to {self.run_dir} ({reason}); "
                "the previous checkpoint is kept"
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in a nest of dicts and lists: about what `torch.save` writes."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(tensor_bytes(item) for item in value)
    return 0


def check_free_space(folder: Path, needed: int) -> None:
    """Refuse to start a write that cannot fit (with 5% and 16 MB of slack for the rest)."""
    free = shutil.disk_usage(folder).free
    if free < needed * 1.05 + (16 << 20):
        raise OSError(28, f"{free >> 20} MB free, about {needed >> 20} MB needed")


def fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def resolved_paths(cfg: TrainConfig) -> dict[str, str]:
    """The config's file and folder paths made absolute, as `PATH_KEYS` are compared."""
    values = cfg.to_dict()
    paths = {}
    for name in PATH_KEYS:
        section, key = name.split(".")
        paths[name] = str(Path(values[section][key]).resolve()) if values[section][key] else ""
    return paths


def load_resume_state(
    run_dir: Path,
    cfg: TrainConfig,
    generator: nn.Module,
    discriminator: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    dist_info: distributed.DistInfo,
    *,
    fingerprint: dict[str, int],
    steps_per_epoch: int,
    options: ResumeOptions,
) -> int:
    """Restore networks, optimizers and random state from the run folder; returns the step.

    Refused when the config or the data changed, unless `options` allow the change (reported).
    """
    path = run_dir / RESUME_FILE
    if not path.is_file():
        raise ConfigError(f"nothing to resume: {path} does not exist")
    # on the CPU: random states must stay CPU tensors; load_state_dict moves the rest to the device
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise ConfigError(f"{path} has state format {state.get('format')}, expected {STATE_FORMAT}")
    check_resume_config(path, state, cfg, options)
    check_resume_data(path, state, fingerprint, steps_per_epoch, options)
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


def check_resume_config(
    path: Path, state: dict[str, Any], cfg: TrainConfig, options: ResumeOptions
) -> None:
    """The fixed sections must match the saved run's; paths as the files they name; the
    schedule's length only with `options.extend`. Keys newer than the state take their default."""
    saved, current, defaults = state["config"], cfg.to_dict(), TrainConfig().to_dict()
    saved_paths, current_paths = state.get("paths", {}), resolved_paths(cfg)
    changed, extended = [], []
    for section in FIXED_SECTIONS:
        for key, value in current[section].items():
            name = f"{section}.{key}"
            before = saved[section].get(key, defaults[section][key])
            if name in PATH_KEYS:  # older states have no resolved paths: resolve here
                before = saved_paths.get(name) or (str(Path(before).resolve()) if before else "")
                value = current_paths[name]
            if before == value:
                continue
            if name in SCHEDULE_KEYS and options.extend:
                extended.append(f"{name} {before} -> {value}")
            else:
                changed.append(name)
    if changed:
        hint = (
            " (--extend allows a new schedule length)" if set(changed) & set(SCHEDULE_KEYS) else ""
        )
        raise ConfigError(f"cannot resume {path} with a changed config: {', '.join(changed)}{hint}")
    if extended:
        logger.warning("schedule changed on resume: %s", ", ".join(extended))


def check_resume_data(
    path: Path,
    state: dict[str, Any],
    fingerprint: dict[str, int],
    steps_per_epoch: int,
    options: ResumeOptions,
) -> None:
    """The files trained on must be those of the saved run, unless `options` accept a change."""
    if "data" not in state:
        logger.warning("%s records no data fingerprint: the data cannot be checked", path)
        return
    change = describe_data_change(state["data"], fingerprint)
    if change is None:
        return
    if state.get("steps_per_epoch", steps_per_epoch) != steps_per_epoch:
        change += f"; an epoch is now {steps_per_epoch} steps, was {state['steps_per_epoch']}"
    if not options.accept_changed_data:
        raise ConfigError(
            f"the training data changed since {path} was saved: {change}. "
            "Resume with --accept-changed-data to train on it as it is now"
        )
    logger.warning("resuming on changed training data: %s", change)


def describe_data_change(before: dict[str, int], after: dict[str, int]) -> str | None:
    """'2 added (c.png, d.png), 1 changed in size (a.png)', or None when nothing changed."""
    kinds = {
        "added": sorted(after.keys() - before.keys()),
        "removed": sorted(before.keys() - after.keys()),
        "changed in size": sorted(k for k in before.keys() & after.keys() if before[k] != after[k]),
    }
    parts = [
        f"{len(names)} {kind} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
        for kind, names in kinds.items()
        if names
    ]
    return ", ".join(parts) if parts else None
