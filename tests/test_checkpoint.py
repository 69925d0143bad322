"""Checkpoint files: bit-exact round trips and one clear error for every broken file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from checkpoint_helpers import rewrite_config

from colord.model import CheckpointError, Generator, get_preset, load_checkpoint, save_checkpoint


def _trained_looking(preset: str = "tiny") -> Generator:
    torch.manual_seed(3)
    g = Generator(get_preset(preset))
    # Non-default BN statistics, as after training, must survive too.
    g.train()
    with torch.no_grad():
        g(torch.rand(2, 1, 32, 32), torch.rand(2, 3, 32, 32))
    return g.eval()


def test_round_trip_is_bit_exact(tmp_path: Path):
    g = _trained_looking()
    path = save_checkpoint(tmp_path / "g.safetensors", g, metadata={"steps": 12})
    loaded = load_checkpoint(path)
    assert loaded.preset == g.preset
    assert loaded.metadata == {"steps": 12}
    assert loaded.format_version == 1
    restored = loaded.generator.state_dict()
    assert restored.keys() == g.state_dict().keys()
    for name, tensor in g.state_dict().items():
        assert torch.equal(tensor, restored[name]), name
    sketch, reference = torch.rand(1, 1, 32, 48), torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(g(sketch, reference), loaded.generator(sketch, reference))


def test_fp16_checkpoint_round_trips_to_fp16_values(tmp_path: Path):
    g = _trained_looking()
    path = save_checkpoint(tmp_path / "g16.safetensors", g, dtype=torch.float16)
    loaded = load_checkpoint(path)
    assert loaded.dtype == "float16"
    w = g.aggregation.query.weight
    assert torch.equal(loaded.generator.aggregation.query.weight, w.half().float())


def test_default_preset_fp16_file_is_under_25_mb(tmp_path: Path):
    path = save_checkpoint(
        tmp_path / "d.safetensors", Generator(get_preset("default")), dtype=torch.float16
    )
    assert path.stat().st_size <= 25_000_000


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path / "good.safetensors", _trained_looking())


def _expect_error(path: Path, fragment: str) -> None:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert fragment in message


def test_missing_file(tmp_path: Path):
    _expect_error(tmp_path / "nope.safetensors", "no such file")


@pytest.mark.parametrize("keep", [0, 5, 100])
def test_truncated_inside_header(good_file: Path, keep: int):
    good_file.write_bytes(good_file.read_bytes()[:keep])
    _expect_error(good_file, "truncated")


def test_truncated_inside_tensor_data(good_file: Path):
    blob = good_file.read_bytes()
    good_file.write_bytes(blob[: len(blob) - 100])
    _expect_error(good_file, "corrupt or truncated")


def test_flipped_bytes_in_weights(good_file: Path):
    blob = bytearray(good_file.read_bytes())
    blob[-50] ^= 0xFF
    good_file.write_bytes(bytes(blob))
    _expect_error(good_file, "checksum")


def test_a_changed_tensor_under_the_old_checksum(good_file: Path):
    # a well-formed file whose one weight was edited and re-saved with the original config: only
    # the tensor checksum can tell (a second guard beside the flipped-byte test)
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(good_file), "pt") as stored:
        metadata = stored.metadata()
        tensors = {name: stored.get_tensor(name) for name in stored.keys()}  # noqa: SIM118
    name = "aggregation.query.weight"
    tensors[name] = tensors[name].clone()
    tensors[name][0, 0] += 1.0
    save_file(tensors, good_file, metadata=metadata)
    _expect_error(good_file, "checksum")


def test_not_a_checkpoint(tmp_path: Path):
    path = tmp_path / "photo.safetensors"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    _expect_error(path, "not a safetensors file")


def test_unknown_format_version(good_file: Path):
    rewrite_config(good_file, lambda c: c.update(format_version=99))
    _expect_error(good_file, "unknown format version 99")


def test_shape_mismatch(good_file: Path):
    def widen(config: dict) -> None:
        config["preset"]["res_channels"] = 24

    rewrite_config(good_file, widen)
    _expect_error(good_file, "shape mismatch")


def test_invalid_preset(good_file: Path):
    rewrite_config(good_file, lambda c: c["preset"].update(aggregation="magic"))
    _expect_error(good_file, "invalid preset")


def test_plain_safetensors_without_colord_config(tmp_path: Path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, path)
    _expect_error(path, "no colord config")


ABSURD_PRESETS = {
    "res_channels": 10**7,  # the probe's: a 39 TB network
    "encoder_channels": [4096] * 10,
    "decoder_channels": [0, 8, 8, 8],
    "num_res_blocks": 10**6,
    "discriminator_channels": -1,
    "attention_stride": "16",
    "color_hint": "yes",
    "name": 7,
}


@pytest.mark.parametrize(("field", "value"), ABSURD_PRESETS.items(), ids=ABSURD_PRESETS.keys())
def test_absurd_preset_values_are_one_line_before_anything_is_built(
    good_file: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: object
):
    rewrite_config(good_file, lambda c: c["preset"].update({field: value}))

    def never(*args, **kwargs):
        raise AssertionError("the network was built before the preset was checked")

    monkeypatch.setattr("colord.model.checkpoint.Generator", never)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(good_file)
    assert "invalid preset" in str(caught.value) and field in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_shape_mismatch_is_found_before_the_network_is_allocated(
    good_file: Path, monkeypatch: pytest.MonkeyPatch
):
    rewrite_config(good_file, lambda c: c["preset"].update(res_channels=24))
    built = []
    real = Generator

    def record(preset):
        built.append(torch.get_default_device().type)
        return real(preset)

    monkeypatch.setattr("colord.model.checkpoint.Generator", record)
    _expect_error(good_file, "shape mismatch")
    assert built == ["meta"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path: Path, bad: float):
    generator = _trained_looking()
    with torch.no_grad():
        generator.aggregation.query.weight[0, 0] = bad
    path = save_checkpoint(tmp_path / "nan.safetensors", generator)  # a valid checksum
    _expect_error(path, "NaN or infinite values (aggregation.query.weight)")
