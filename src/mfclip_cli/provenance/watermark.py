"""The invisible watermarks of Stable Diffusion's reference pipelines: invisible-watermark's
"dwtDct" method (SD 1.x "StableDiffusionV1", SD 2.x "SDV2", SDXL's fixed 48-bit message).

The decoder is ours, written from invisible-watermark 0.2.0's ``EmbedMaxDct.decode`` and checked
bit for bit against it: that package requires ``opencv-python``, which would replace the
``opencv-python-headless`` we depend on (both install ``cv2``), and its decoder loops over 4x4
blocks in Python (here: numpy, a few milliseconds per megapixel). The method: the U channel of
OpenCV's BGR->YUV, one level of the Haar DWT, its approximation band cut into 4x4 blocks; each
block's largest-magnitude coefficient but the first, modulo the scale 36, gives one bit (above
half the scale: 1); bit k of the message is the mean of blocks k, k + n, k + 2n, ...
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from mfclip_cli.provenance.record import FOUND, NONE_FOUND, WatermarkEvidence, WatermarkMatch

SCALE = 36.0  # invisible-watermark's default scales [0, 36, 36]: only U is read (range(2))
BLOCK = 4
MIN_PIXELS = 256 * 256  # the library refuses smaller images


def _bits_of_bytes(message: bytes) -> np.ndarray:
    return np.unpackbits(np.frombuffer(message, dtype=np.uint8)).astype(bool)


# Stability AI's generative-models (scripts/demo/streamlit_helpers.py, detect.py) and diffusers
SDXL_BITS = np.array([int(b) for b in bin(0b101100111110110010010000011110111011000110011110)[2:]])
MESSAGES: dict[str, np.ndarray] = {
    "sdxl": SDXL_BITS.astype(bool),
    "sd1": _bits_of_bytes(b"StableDiffusionV1"),  # CompVis stable-diffusion scripts/txt2img.py
    "sd2": _bits_of_bytes(b"SDV2"),  # Stability-AI/stablediffusion scripts/txt2img.py
}


def _chance_at_least(total: int, matched: int) -> float:
    """The chance that ``matched`` or more of ``total`` fair coin flips agree with a message."""
    return sum(math.comb(total, k) for k in range(matched, total + 1)) / 2**total


# A message is "found" when at least this many of its bits match: for SDXL's 48 bits, 36 (what
# Stability's scripts/demo/detect.py calls "very likely watermarked", more than 35, with no false
# positive on their 10,000 real images); for the others, the fewest bits that chance alone
# reaches no more often than 36 of 48 (p = 3.6e-4 for unrelated bits): 89 of 136, 26 of 32.
# Below it nothing is claimed: 28-35 of 48, Stability's "partial match", is reached by chance
# 16 % of the time.
FOUND_AT = {
    name: next(
        k
        for k in range(len(bits) + 1)
        if _chance_at_least(len(bits), k) <= _chance_at_least(48, 36)
    )
    for name, bits in MESSAGES.items()
}


HAAR = math.sqrt(2) / 2  # 0.7071067811865476, pywt's Haar filter tap (1 / sqrt(2) rounds lower)


def haar_approximation(plane: np.ndarray) -> np.ndarray:
    """The approximation band of one level of the 2-D Haar DWT (the only band the decoder reads),
    computed in the order of operations of ``pywt.dwt2(plane, "haar")[0]`` so that the floats
    (and the bits read from them, which compare remainders) are the same to the last digit.
    ``plane`` may be uint8: each product promotes its pixel to float64 exactly."""
    a, b, c, d = plane[0::2, 0::2], plane[0::2, 1::2], plane[1::2, 0::2], plane[1::2, 1::2]
    low_left, low_right = a * HAAR + c * HAAR, b * HAAR + d * HAAR
    return low_left * HAAR + low_right * HAAR


def block_bits(rgb: np.ndarray) -> np.ndarray:
    """The bit each 4x4 block of the Haar band carries, in the library's block order, for an
    RGB image (uint8 [H, W, 3]; the library is fed BGR, the same pixels reordered)."""
    height, width = (rgb.shape[0] // BLOCK) * BLOCK, (rgb.shape[1] // BLOCK) * BLOCK
    u = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV)[:height, :width, 1]
    band = haar_approximation(u)
    rows, cols = band.shape[0] // BLOCK, band.shape[1] // BLOCK
    blocks = (
        band[: rows * BLOCK, : cols * BLOCK]
        .reshape(rows, BLOCK, cols, BLOCK)
        .transpose(0, 2, 1, 3)
        .reshape(rows * cols, BLOCK * BLOCK)
    )
    peak = np.argmax(np.abs(blocks[:, 1:]), axis=1) + 1
    values = np.abs(blocks[np.arange(len(blocks)), peak])
    return (values % SCALE) > 0.5 * SCALE


def message_bits(bits: np.ndarray, length: int) -> np.ndarray:
    """A ``length``-bit message from the blocks' bits: bit k is the mean of blocks k, k + n, ..."""
    slots = np.arange(len(bits)) % length
    means = np.bincount(slots, weights=bits, minlength=length) / np.bincount(
        slots, minlength=length
    )
    return means * 255 > 127


def verdict(name: str, matched: int) -> str:
    return FOUND if matched >= FOUND_AT[name] else "not_found"


def read_watermarks(rgb: np.ndarray) -> WatermarkEvidence:
    """Each known message compared with the bits decoded from ``rgb`` (the decoded, upright
    image the scan analyses)."""
    if rgb.shape[0] * rgb.shape[1] < MIN_PIXELS:
        return WatermarkEvidence(note="image smaller than 256x256 pixels: not checked")
    bits = block_bits(rgb)
    if len(bits) < max(len(message) for message in MESSAGES.values()):
        # a strip a few pixels high: too few blocks to carry each bit once (the means were
        # 0 / 0, the verdict "none found" from no bit read: audit W L1)
        return WatermarkEvidence(note="image too narrow to hold a watermark's bits: not checked")
    matches = []
    for name, message in MESSAGES.items():
        matched = int((message_bits(bits, len(message)) == message).sum())
        matches.append(WatermarkMatch(name, matched, len(message), verdict(name, matched)))
    found = any(match.verdict == FOUND for match in matches)
    return WatermarkEvidence(FOUND if found else NONE_FOUND, matches)
