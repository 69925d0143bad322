"""Flats evaluation: scores the flats, the plain output and the mean-colour baseline."""

from __future__ import annotations

import cv2
import numpy as np

from colord.daemon.flats import FlatsOptions, flats
from colord.training.evaluation.flats_eval import (
    METHODS,
    dominant_counts,
    evaluate_flats,
    flats_contact_sheet,
    results_table,
    true_flats,
)

SIZE = 128


def drawn_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(line art, lines 0 on 255; its true flats): two rings, each region one colour."""
    rng = np.random.default_rng(seed)
    line_art = np.full((SIZE, SIZE), 255, np.uint8)
    truth = np.full((SIZE, SIZE, 3), 255, np.uint8)
    for centre, radius in (((40, 60), 28), ((90, 70), 24)):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.circle(truth, centre, radius, colour, -1)
        cv2.circle(line_art, centre, radius, 0, 2)
    truth[line_art == 0] = 0  # the drawn ink, as in the colour pictures
    return line_art, truth


def noisy_colorizer(line_art: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A model that has the right colours, blurred and noisy, and its flats."""
    rng = np.random.default_rng(0)
    plain = cv2.GaussianBlur(reference, (7, 7), 2).astype(np.int16)
    plain = np.clip(plain + rng.integers(-12, 13, plain.shape), 0, 255).astype(np.uint8)
    layer = flats(plain, line_art == 0, options=FlatsOptions(transparent_ground=False))
    return plain, layer


def test_flats_score_above_the_noisy_plain_output_they_come_from() -> None:
    pairs = [drawn_pair(seed) for seed in range(3)]
    line_arts = [line_art for line_art, _ in pairs]
    truths = [truth for _, truth in pairs]
    run = evaluate_flats(line_arts, truths, truths, noisy_colorizer)
    scores = {score.method: score for score in run.scores}
    assert list(scores) == list(METHODS)
    assert scores["flats"].psnr_off_lines > scores["plain"].psnr_off_lines + 3
    assert scores["flats"].psnr_true_flats > scores["plain"].psnr_true_flats + 3
    assert scores["flats"].true_flat_share == 1.0
    assert scores["flats"].one_colour == 1.0
    assert scores["plain"].one_colour < 0.5
    assert scores["flats"].region_accuracy == 1.0
    assert scores["flats"].regions == 6  # two rings on each of three images
    assert scores["mean_color"].region_accuracy < 1.0
    assert "| flats | 100.0% |" in results_table(run.scores)
    sheet = flats_contact_sheet(run, line_arts, truths, truths, ["a", "b", "c"], [0, 2])
    assert sheet.size[0] == 6 * 128 and sheet.size[1] > 2 * 128


def test_dominant_counts_each_regions_most_common_colour() -> None:
    image = np.zeros((2, 4, 3), np.uint8)
    image[0, 1] = (9, 9, 9)  # one odd pixel in region 1
    image[1, 2:] = (5, 6, 7)  # region 2: two colours, two pixels each
    regions = np.array([[1, 1, 0, 0], [2, 2, 2, 2]])
    most, pixels = dominant_counts(image, regions)
    assert most.tolist() == [0, 1, 2] and pixels.tolist() == [0, 2, 4]


def test_true_flats_leave_out_regions_the_line_art_does_not_separate() -> None:
    line_art, truth = drawn_pair(0)
    lettering = truth.copy()
    lettering[55:65, 30:50] = (0, 0, 0)  # a mark inside the first ring, not in the line art
    assert true_flats(line_art, truth)[60, 40]
    assert not true_flats(line_art, lettering)[60, 40]
    assert true_flats(line_art, lettering)[70, 95]  # the second ring is still flat
