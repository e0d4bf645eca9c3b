"""A face's generator fingerprint: the power spectrum of its SRM noise residuals.

Generators leave traces in the high-frequency noise of what they make: up-sampling layers put
peaks on a lattice of the spectrum, denoising reshapes its fall-off (Marra et al. 2019; Frank et
al. 2020; Corvi et al. 2023 find them per generator, GAN and diffusion alike). The aligned face's
grey levels go through the noise branch's three SRM high-pass filters (``model/noise.py``), each
residual is Hann-windowed and Fourier-transformed, and its power is summarised twice, both on a
log scale:

* a coarse 8 x 8 grid of the centred spectrum, of which the first five rows are kept (the
  spectrum of a real image is point-symmetric, so the rest repeats them): where peaks sit;
* 32 rings of equal width in radial frequency, out to the corner: how power falls off, which
  rotation of an aligned face does not move.

That is 3 x (40 + 32) = 216 numbers per face, fixed (no learnt weight), computed on the crop the
detector reads, batched on its device. Attribution (``attribution.py``) fits its generator model
on them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mfclip_cli.model.noise import SRM_HALO, SRM_KERNELS, SRM_NORMALISERS, grey_levels

GRID = 8  # cells per side of the centred spectrum's grid
GRID_ROWS = GRID // 2 + 1  # rows kept: the rest mirror them
RINGS = 32  # radial-frequency rings
FEATURES = len(SRM_KERNELS) * (GRID * GRID_ROWS + RINGS)
FINGERPRINT_NAME = f"srm-residual-spectrum-{FEATURES}"  # a checkpoint's record names what it fit
DESCRIPTION = (
    f"log power spectrum of the {len(SRM_KERNELS)} SRM residuals of the aligned face's grey "
    f"levels (Hann window): a {GRID}x{GRID} grid of the centred spectrum (first {GRID_ROWS} "
    f"rows) and {RINGS} radial rings, {FEATURES} numbers"
)
_EDGE = 1e-9  # in ring units: far above float64 rounding, far below a frequency step
_FLOOR = 1e-6  # added to the power before the log, so a flat crop gives finite features


def residual_power(faces: torch.Tensor) -> torch.Tensor:
    """Centred power spectra of the SRM residuals of faces [B, 3, H, W] in [0, 1], in fp32
    whatever the autocast: [B, 3, H, W] (zero frequency at H // 2, W // 2)."""
    with torch.autocast(faces.device.type, enabled=False):
        grey = grey_levels(faces)[:, None]
        kernels = SRM_KERNELS.to(faces.device) / torch.tensor(
            SRM_NORMALISERS, device=faces.device
        ).view(-1, 1, 1)
        padded = F.pad(grey, (SRM_HALO,) * 4, mode="reflect")
        residual = F.conv2d(padded, kernels[:, None])
        residual = residual - residual.mean(dim=(-2, -1), keepdim=True)
        height, width = residual.shape[-2:]
        window = torch.outer(
            torch.hann_window(height, periodic=False, device=faces.device),
            torch.hann_window(width, periodic=False, device=faces.device),
        )
        spectrum = torch.fft.fft2(residual * window)
        return torch.fft.fftshift(spectrum.abs().square(), dim=(-2, -1))


def _rings(power: torch.Tensor) -> torch.Tensor:
    """Mean power in each of ``RINGS`` rings of radial frequency: [B, C, H, W] -> [B, C, RINGS]."""
    height, width = power.shape[-2:]
    fy = (torch.arange(height, dtype=torch.float64) - height // 2) / height
    fx = (torch.arange(width, dtype=torch.float64) - width // 2) / width
    radius = torch.sqrt(fy[:, None].square() + fx[None, :].square()) / (0.5 * 2**0.5)
    # many frequencies lie exactly on a ring's edge (the diagonals): they belong to the outer
    # ring, whatever the rounding of the square root
    ring = (radius * RINGS + _EDGE).long().clamp(max=RINGS - 1).flatten().to(power.device)
    flat = power.flatten(2)
    sums = flat.new_zeros(*flat.shape[:2], RINGS).index_add_(2, ring, flat)
    counts = torch.bincount(ring, minlength=RINGS).to(flat.dtype)
    return sums / counts.clamp(min=1)


@torch.no_grad()
def face_fingerprints(faces: torch.Tensor) -> torch.Tensor:
    """The fingerprint of each aligned face [B, 3, H, W] in [0, 1]: [B, FEATURES], fp32."""
    power = residual_power(faces)
    grid = F.adaptive_avg_pool2d(power, GRID)[:, :, :GRID_ROWS]
    features = torch.cat([grid.flatten(2), _rings(power)], dim=2)
    return torch.log(features + _FLOOR).flatten(1)
