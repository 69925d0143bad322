"""DistributedDataParallel on CPU with gloo: two ranks train in step on disjoint halves of the data
and end with equal weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from train_helpers import tiny_config, write_art_folder

from colord.model import load_checkpoint
from colord.training.samples.dataset import ColorizationDataset
from colord.training.train import loop
from colord.training.train.loop import train

WORLD = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_rank(rank: int, port: int, art: Path, out: Path, results: Path) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )
    torch.set_num_threads(1)
    # record the dataset indices behind each batch this rank trains on (no worker processes: a
    # batch's samples are the last ones read before its step; samples read outside the batches,
    # e.g. to measure the training strokes, come before them)
    fetched: list[int] = []
    batches: list[list[int]] = []
    read_sample, step = ColorizationDataset.__getitem__, loop.training_step

    def recording_getitem(dataset: ColorizationDataset, index: int) -> dict:
        fetched.append(int(index))
        return read_sample(dataset, index)

    def recording_step(loss, batch, *args, **kwargs):
        batches.append(fetched[-len(batch["sketch"]) :])
        fetched.clear()
        return step(loss, batch, *args, **kwargs)

    ColorizationDataset.__getitem__ = recording_getitem
    loop.training_step = recording_step
    result = train(tiny_config(art, out, run__max_steps=3, optim__batch_size=4))
    networks = {"generator": result.generator, "discriminator": result.discriminator}
    parameters = {
        network: {name: p.detach() for name, p in module.named_parameters()}
        for network, module in networks.items()
    }
    torch.save({"step": result.step, "batches": batches, **parameters}, results / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_gloo_ranks_finish_with_identical_weights(tmp_path: Path) -> None:
    art = write_art_folder(tmp_path / "art")
    results = tmp_path / "results"
    results.mkdir()
    mp.spawn(run_rank, args=(free_port(), art, tmp_path / "run", results), nprocs=WORLD, join=True)
    ranks = [torch.load(results / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert [r["step"] for r in ranks] == [3, 3]
    # each rank trains on batch_size / world samples a step, and the ranks' samples are disjoint:
    # an epoch of 8 images is 2 steps, each rank reading its own half
    assert [[len(batch) for batch in r["batches"]] for r in ranks] == [[2, 2, 2], [2, 2, 2]]
    for first, second in zip(ranks[0]["batches"], ranks[1]["batches"], strict=True):
        assert not set(first) & set(second)
    first_epoch = [index for r in ranks for batch in r["batches"][:2] for index in batch]
    assert sorted(first_epoch) == list(range(8))
    for network in ("generator", "discriminator"):
        first, second = ranks[0][network], ranks[1][network]
        assert first.keys() == second.keys()
        for name in first:
            assert torch.equal(first[name], second[name]), f"{network}.{name}"
    # rank 0 wrote the run folder, and its exported generator is the trained one
    exported = load_checkpoint(tmp_path / "run" / "generator.safetensors").generator
    for name, parameter in exported.named_parameters():
        assert torch.equal(parameter, ranks[0]["generator"][name])


@pytest.mark.slow
def test_colord_train_nproc_runs_under_torchrun(tmp_path: Path) -> None:
    art = write_art_folder(tmp_path / "art")
    out = tmp_path / "run"
    colord = str(Path(sys.executable).with_name("colord"))
    process = subprocess.run(
        [colord, "train", "--data", str(art), "--preset", "quick", "--out", str(out),
         "--nproc", "2", "--set", "model.preset=tiny", "--set", "data.size=64",
         "--set", "optim.batch_size=4", "--set", "data.workers=0", "--set", "run.max_steps=2"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.count("trained 2 steps") == 1  # printed by rank 0 only
    assert "2 rank(s)" in process.stderr
    assert load_checkpoint(out / "generator.safetensors").metadata["step"] == 2
