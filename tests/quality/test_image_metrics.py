import numpy as np
import pytest

from reelserve.quality.image_metrics import MAX_PSNR, psnr, ssim


def clip(seed: int = 0) -> np.ndarray:
    # A smooth gradient with a square: structure SSIM can see, like a micro-world frame.
    y, x = np.mgrid[0:32, 0:32]
    frame = np.stack([x * 8, y * 8, (x + y) * 4], axis=-1).astype(np.float64)
    frame[8:20, 10:22] = (200, 40, 40)
    frames = np.stack([np.roll(frame, shift, axis=1) for shift in range(4)])
    return frames.clip(0, 255).astype(np.uint8)


def test_identical_clips_are_perfect() -> None:
    a = clip()
    assert psnr(a, a) == MAX_PSNR
    assert ssim(a, a) == pytest.approx(1.0)


def test_psnr_matches_its_definition() -> None:
    a = clip()
    b = a.copy()
    b[0, 0, 0, 0] = a[0, 0, 0, 0] ^ 0x10  # one value off by 16
    mse = 16**2 / a.size
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / mse))


def test_more_noise_scores_lower_on_both() -> None:
    a = clip()
    rng = np.random.default_rng(0)
    noisy = [np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).astype(np.uint8) for sigma in (2, 10, 40)]
    psnrs = [psnr(a, n) for n in noisy]
    ssims = [ssim(a, n) for n in noisy]
    assert psnrs == sorted(psnrs, reverse=True)
    assert ssims == sorted(ssims, reverse=True)
    assert ssims[0] > 0.9 and ssims[-1] < 0.6


def test_ssim_sees_structure_not_just_brightness() -> None:
    a = clip()
    shifted = np.clip(a.astype(int) + 20, 0, 255).astype(np.uint8)  # same structure, brighter
    inverted = (255 - a).astype(np.uint8)  # same brightness range, structure reversed
    assert ssim(a, shifted) > 0.9
    assert ssim(a, inverted) < 0


def test_mismatched_clips_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        psnr(clip(), clip()[:2])
    with pytest.raises(ValueError, match="uint8"):
        ssim(clip().astype(np.float32), clip().astype(np.float32))
