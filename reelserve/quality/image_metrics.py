"""Full-reference image metrics between two clips made from the same prompt and seed.

PSNR over the whole clip, and SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01,
K2 0.03, on luma) averaged over frames. Both on uint8 frames, so the numbers compare with what
other tools report for 8-bit video.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MAX_PSNR = 100.0  # what identical clips report: keeps tables and JSON finite
_WINDOW, _SIGMA, _K1, _K2, _PEAK = 11, 1.5, 0.01, 0.03, 255.0


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """dB between two uint8 clips of the same shape; ``MAX_PSNR`` when they are identical."""
    _check(reference, test)
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    if mse == 0.0:
        return MAX_PSNR
    return min(MAX_PSNR, 10.0 * math.log10(_PEAK**2 / mse))


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean SSIM over the frames of two uint8 (T, H, W, 3) clips, on luma (BT.601)."""
    _check(reference, test)
    x, y = _luma(reference), _luma(test)
    window = _gaussian_window().to(x.dtype)
    pad = _WINDOW // 2
    # Reflect-padding keeps every pixel of a small frame in the mean, as the window covers edges too.
    x, y = (F.pad(t, (pad, pad, pad, pad), mode="reflect") for t in (x, y))
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mu_x**2
    var_y = F.conv2d(y * y, window) - mu_y**2
    cov = F.conv2d(x * y, window) - mu_x * mu_y
    c1, c2 = (_K1 * _PEAK) ** 2, (_K2 * _PEAK) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(index.mean())


def _luma(clip: np.ndarray) -> torch.Tensor:
    rgb = torch.from_numpy(clip.astype(np.float64))
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    return luma.unsqueeze(1)  # (T, 1, H, W)


def _gaussian_window() -> torch.Tensor:
    offsets = torch.arange(_WINDOW, dtype=torch.float64) - _WINDOW // 2
    g = torch.exp(-(offsets**2) / (2 * _SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).reshape(1, 1, _WINDOW, _WINDOW)


def _check(reference: np.ndarray, test: np.ndarray) -> None:
    if reference.shape != test.shape:
        raise ValueError(f"clips differ in shape: {reference.shape} vs {test.shape}")
    if reference.dtype != np.uint8 or test.dtype != np.uint8:
        raise ValueError("clips must be uint8")
