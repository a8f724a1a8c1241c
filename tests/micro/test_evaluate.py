"""The analytic judge reads ground-truth clips right, survives blur and noise, and notices broken clips."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from reelserve.micro.contact_sheet import LABEL_HEIGHT, SEPARATOR, contact_sheet, encode_png
from reelserve.micro.dataset import Sample, held_out_samples, training_samples
from reelserve.micro.evaluate import Judgement, accuracy, judge, score
from reelserve.micro.world import BACKGROUNDS, COLORS, Scene, render, shape_mask

ATTRIBUTES = ("color", "shape", "motion")


@pytest.fixture(scope="module")
def truth() -> list[tuple[Sample, np.ndarray]]:
    samples = training_samples(300, seed=11) + held_out_samples(100, seed=12)
    return [(sample, sample.render()) for sample in samples]


def blur(clip: np.ndarray, passes: int) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur within each frame, ``passes`` times (σ ≈ 0.7 px per pass)."""
    x = clip.astype(np.float32)
    for axis in (1, 2):
        for _ in range(passes):
            pad = [(0, 0)] * 4
            pad[axis] = (1, 1)
            p = np.pad(x, pad, mode="edge")
            n = x.shape[axis]
            x = (p.take(range(n), axis) + 2 * p.take(range(1, n + 1), axis) + p.take(range(2, n + 2), axis)) / 4
    return x


def degrade(clip: np.ndarray, rng: np.random.Generator, sigma: float, passes: int) -> np.ndarray:
    return np.clip(blur(clip, passes) + rng.normal(0.0, sigma, clip.shape), 0, 255).round().astype(np.uint8)


def judge_all(clips: list[tuple[Sample, np.ndarray]]) -> tuple[dict[str, float], float]:
    results, consistency = [], []
    for sample, frames in clips:
        judgement = judge(frames)
        results.append(score(judgement, sample.scene.shape, sample.scene.color, sample.scene.motion))
        consistency.append(judgement.consistency)
    return accuracy(results), float(np.mean(consistency))


def scene(**changes: object) -> Scene:
    base = {"shape": "circle", "color": "red", "motion": "right", "background": "navy",
            "extent": 16.0, "x": 16.0, "y": 30.0}
    return Scene(**(base | changes))


def test_ground_truth_is_read_right(truth: list[tuple[Sample, np.ndarray]]) -> None:
    scores, consistency = judge_all(truth)
    assert all(scores[a] >= 0.98 for a in ATTRIBUTES), scores
    assert consistency >= 0.98


@pytest.mark.parametrize(("sigma", "passes"), [(10.0, 1), (20.0, 3)])
def test_blurred_noisy_ground_truth_is_read_right(
    truth: list[tuple[Sample, np.ndarray]], sigma: float, passes: int
) -> None:
    rng = np.random.default_rng(5)
    degraded = [(sample, degrade(frames, rng, sigma, passes)) for sample, frames in truth[::2]]
    scores, consistency = judge_all(degraded)
    assert all(scores[a] >= 0.98 for a in ATTRIBUTES), scores
    assert consistency >= 0.95


def test_a_wrong_prompt_scores_false() -> None:
    judgement = judge(render(scene()))
    assert score(judgement, "circle", "red", "right") == dict.fromkeys(ATTRIBUTES, True)
    assert score(judgement, "square", "magenta", "left") == dict.fromkeys(ATTRIBUTES, False)
    assert score(judge(render(scene(shape="triangle", motion="up", x=30.0, y=45.0))),
                 "square", "red", "down") == {"color": True, "shape": False, "motion": False}


def teleporting(clip: np.ndarray) -> np.ndarray:
    elsewhere = render(scene(motion="still", x=48.0, y=50.0))
    out = clip.copy()
    out[[5, 11]] = elsewhere[[5, 11]]
    return out


def with_second_object(clip: np.ndarray) -> np.ndarray:
    alpha = shape_mask("circle", 50.0, 12.0, 14.0)[..., None]
    out = clip.copy()
    out[::2] = np.round(alpha * np.array(COLORS["red"]) + (1 - alpha) * out[::2]).astype(np.uint8)
    return out


def with_blank_frames(clip: np.ndarray) -> np.ndarray:
    out = clip.copy()
    out[[3, 7, 8, 13]] = BACKGROUNDS["navy"]
    return out


def shrinking(clip: np.ndarray) -> np.ndarray:
    out = clip.copy()
    out[8:] = render(scene(extent=8.0))[8:]
    return out


@pytest.mark.parametrize("corrupt", [teleporting, with_second_object, with_blank_frames, shrinking])
def test_broken_clips_are_less_consistent(corrupt) -> None:
    clean = render(scene())
    broken = judge(corrupt(clean))
    assert judge(clean).consistency == 1.0
    assert broken.found
    assert broken.consistency <= 0.8


@pytest.mark.parametrize("sigma", [0.0, 20.0])
def test_a_blank_clip_has_no_object(sigma: float) -> None:
    rng = np.random.default_rng(1)
    frames = np.clip(np.full((17, 64, 64, 3), BACKGROUNDS["grey"]) + rng.normal(0, sigma, (17, 64, 64, 3)), 0, 255)
    judgement = judge(frames.astype(np.uint8))
    assert judgement == Judgement(color=None, shape=None, motion=None, consistency=0.0, found=False)
    assert score(judgement, "circle", "red", "still") == dict.fromkeys(ATTRIBUTES, False)


def test_random_pixels_have_no_object() -> None:
    frames = np.random.default_rng(2).integers(0, 256, (17, 64, 64, 3), dtype=np.uint8)
    assert not judge(frames).found


def test_other_lengths_and_sizes_are_read() -> None:
    clip = render(scene(shape="square", color="yellow", background="grey", motion="down", x=30.0, y=14.0))
    for frames in (clip[::4], clip[:, 4:60, 2:50], clip.repeat(2, axis=1).repeat(2, axis=2)):
        judgement = judge(frames)
        assert (judgement.color, judgement.shape, judgement.motion) == ("yellow", "square", "down")


def test_judge_rejects_frames_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match="expected frames"):
        judge(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="expected frames"):
        judge(np.zeros((17, 64, 64), np.uint8))


def test_accuracy_is_the_fraction_right_per_attribute() -> None:
    results = [{"color": True, "shape": False, "motion": True}, {"color": True, "shape": False, "motion": False}]
    assert accuracy(results) == {"color": 1.0, "shape": 0.0, "motion": 0.5}
    assert accuracy([]) == {"color": 0.0, "shape": 0.0, "motion": 0.0}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("labelled", [False, True])
def test_contact_sheet_is_a_grid_of_the_clips_in_order(tmp_path: Path, labelled: bool) -> None:
    image_module = pytest.importorskip("PIL.Image")
    clips = [render(scene(color=c)) for c in ("red", "green", "blue")]
    labels = ["red", "green", "blue"] if labelled else None
    path = contact_sheet(clips, labels, tmp_path / "sheets" / "sheet.png", frames_per_clip=4)
    band = LABEL_HEIGHT if labelled else 0
    width, height = 4 * 128 + 5 * SEPARATOR, 3 * (band + 128) + 4 * SEPARATOR
    assert png_size(path) == (width, height)
    sheet = np.asarray(image_module.open(path).convert("RGB"))
    for row, clip in enumerate(clips):
        top = SEPARATOR + row * (band + 128 + SEPARATOR) + band
        left = SEPARATOR + 3 * (128 + SEPARATOR)  # the fourth frame is the clip's last
        assert np.array_equal(sheet[top:top + 128:2, left:left + 128:2], clip[-1])


def test_contact_sheet_rejects_mismatched_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="labels"):
        contact_sheet([render(scene())], ["a", "b"], tmp_path / "x.png")


def test_fallback_png_encoder_round_trips() -> None:
    image_module = pytest.importorskip("PIL.Image")
    import io

    pixels = np.random.default_rng(3).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    data = encode_png(pixels)
    assert struct.unpack(">II", data[16:24]) == (11, 7)
    assert np.array_equal(np.asarray(image_module.open(io.BytesIO(data)).convert("RGB")), pixels)


def test_contact_sheet_without_pillow_writes_the_same_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `from PIL import ...` raise ImportError
    clips = [render(scene()), render(scene(color="blue"))]
    path = contact_sheet(clips, ["a", "b"], tmp_path / "plain.png", frames_per_clip=3)
    assert png_size(path) == (3 * 128 + 4 * SEPARATOR, 2 * (LABEL_HEIGHT + 128) + 3 * SEPARATOR)
