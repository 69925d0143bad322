"""Kill and resume: a run continued from its mid-way state ends where an unbroken one does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import single_thread, tiny_config, write_art_folder

from colord.training.train.config import ConfigError
from colord.training.train.loop import RESUME_FILE, train

pytestmark = pytest.mark.usefixtures(single_thread.__name__)

STEPS = 6  # 8 images, 2 a step: 4 steps an epoch, so the resumed half starts mid-epoch


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name


@pytest.mark.slow
def test_resumed_run_matches_an_uninterrupted_one_bit_for_bit(tmp_path: Path) -> None:
    art = write_art_folder(tmp_path / "art")
    # a short schedule, so the learning rate decays during the run and the resume must restore it
    schedule = {"optim__constant_epochs": 1, "optim__decay_epochs": 1, "data__workers": 1}

    whole = train(tiny_config(art, tmp_path / "whole", run__max_steps=STEPS, **schedule))

    interrupted = tmp_path / "interrupted"
    first = train(tiny_config(art, interrupted, run__max_steps=STEPS // 2, **schedule))
    assert first.step == STEPS // 2
    assert torch.load(interrupted / RESUME_FILE, weights_only=True)["step"] == STEPS // 2
    resumed = train(tiny_config(art, interrupted, run__max_steps=STEPS, **schedule), resume=True)
    assert resumed.step == STEPS

    assert_same_weights(whole.generator, resumed.generator)
    assert_same_weights(whole.discriminator, resumed.discriminator)
    # and the second half really trained: the weights moved on from the mid-way state
    pairs = zip(first.generator.parameters(), resumed.generator.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)


def test_resume_refuses_a_changed_config_or_a_missing_state(tmp_path: Path) -> None:
    art = write_art_folder(tmp_path / "art", count=4)
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(tiny_config(art, run, run__max_steps=1), resume=True)
    train(tiny_config(art, run, run__max_steps=1))
    with pytest.raises(ConfigError, match=r"changed config: optim\.lr_g"):
        train(tiny_config(art, run, run__max_steps=2, optim__lr_g=1e-3), resume=True)
