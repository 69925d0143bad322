"""SPair-71k annotations and keypoint pairs drawn from a dense correspondence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from colord.training.evaluation.spair import (
    KeypointPairs,
    keypoints_from_correspondence,
    load_spair_pair,
    load_spair_split,
)


def write_pair(folder, name, category, source_kps, target_kps, **extra):
    record = {
        "pair_id": 1,
        "category": category,
        "src_imname": f"{name}_a.jpg",
        "trg_imname": f"{name}_b.jpg",
        "src_kps": source_kps,
        "trg_kps": target_kps,
        "src_bndbox": [0, 0, 10, 10],
        "trg_bndbox": [0, 0, 10, 10],
        **extra,
    }
    path = folder / f"{name}:{category}.json"
    path.write_text(json.dumps(record))
    return path


def test_spair_pair_is_read_with_its_keypoints_and_image_paths(tmp_path):
    path = write_pair(tmp_path, "0001-a-b", "cat", [[10, 20], [30, 40]], [[11, 21], [31, 41]])
    pair = load_spair_pair(path, tmp_path / "JPEGImages")
    assert pair.category == "cat"
    assert pair.source_image == tmp_path / "JPEGImages" / "cat" / "0001-a-b_a.jpg"
    assert pair.target_image == tmp_path / "JPEGImages" / "cat" / "0001-a-b_b.jpg"
    np.testing.assert_array_equal(pair.keypoints.source, [[10, 20], [30, 40]])
    np.testing.assert_array_equal(pair.keypoints.target, [[11, 21], [31, 41]])


def test_spair_split_filters_categories_and_reports_a_wrong_folder(tmp_path):
    split = tmp_path / "PairAnnotation" / "test"
    split.mkdir(parents=True)
    write_pair(split, "0001-a-b", "cat", [[1, 2]], [[3, 4]])
    write_pair(split, "0002-c-d", "car", [[1, 2]], [[3, 4]])
    assert [p.category for p in load_spair_split(tmp_path)] == ["cat", "car"]
    assert [p.category for p in load_spair_split(tmp_path, categories=("car",))] == ["car"]
    with pytest.raises(ValueError, match="not an SPair-71k folder"):
        load_spair_split(tmp_path, split="val")
    with pytest.raises(ValueError, match="unknown SPair-71k split"):
        load_spair_split(tmp_path, split="train")


def test_spair_annotation_errors_name_the_file_and_the_problem(tmp_path):
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"category": "cat", "src_imname": "a", "trg_imname": "b"}))
    with pytest.raises(ValueError, match=r"missing\.json.*src_kps"):
        load_spair_pair(missing, tmp_path)
    uneven = write_pair(tmp_path, "uneven", "dog", [[1, 2], [3, 4]], [[1, 2]])
    with pytest.raises(ValueError, match="equally long"):
        load_spair_pair(uneven, tmp_path)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(ValueError, match=r"garbage\.json"):
        load_spair_pair(garbage, tmp_path)


def test_keypoint_pairs_scale_each_side_on_its_own():
    pairs = KeypointPairs(np.array([[10.0, 20.0]]), np.array([[4.0, 8.0]]))
    scaled = pairs.scaled((0.5, 0.25), (2.0, 1.0))
    np.testing.assert_allclose(scaled.source, [[5.0, 5.0]])
    np.testing.assert_allclose(scaled.target, [[8.0, 8.0]])
    with pytest.raises(ValueError, match="as many"):
        KeypointPairs(np.zeros((2, 2)), np.zeros((3, 2)))


def test_keypoints_from_a_correspondence_follow_it_and_stay_inside_the_margins():
    height, width = 40, 50
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    correspondence = np.stack([xs + 3.0, ys - 2.0], axis=-1)  # a shift of (+3, -2)
    correspondence[:, :10] = np.nan  # these pixels left the reference
    pairs = keypoints_from_correspondence(correspondence, 30, np.random.default_rng(0), margin=4)
    assert len(pairs) == 30
    np.testing.assert_allclose(pairs.target - pairs.source, np.tile([3.0, -2.0], (30, 1)))
    assert (pairs.source[:, 0] >= 10).all()
    assert (pairs.target >= 4).all()
    assert (pairs.target[:, 0] <= width - 5).all() and (pairs.target[:, 1] <= height - 5).all()
    assert len(np.unique(pairs.source, axis=0)) == 30


def test_keypoints_from_a_correspondence_return_fewer_when_few_qualify():
    correspondence = np.full((8, 8, 2), np.nan)
    correspondence[4, 4] = [4.0, 4.0]
    pairs = keypoints_from_correspondence(correspondence, 5, np.random.default_rng(0))
    assert len(pairs) == 1
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        keypoints_from_correspondence(np.zeros((8, 8)), 5, np.random.default_rng(0))
