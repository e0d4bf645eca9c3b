"""The CUDA paths in process, each against its CPU twin: ``pytest -m cuda`` where a GPU is; skipped
(by conftest) where none is.

Bounds, and why they are not float rounding:
- detection: cuDNN runs float32 convolutions as TF32 by default (10-bit mantissa), so P-, R- and
  O-Net's outputs move by about 1e-3 relative; boxes and landmarks may move by
  ``BOX_TOLERANCE`` pixels, scores by ``SCORE_TOLERANCE``, and no face may appear or vanish;
- the model in fp32 on CUDA: the same TF32 convolutions (patch embedding, noise encoder);
- bf16 autocast: 8 significant bits in every matrix product. On the demo model's crops, CPU bf16
  autocast moved probabilities by 1.6e-4 (the SRM filters stay fp32; before they did, 0.013).

Every test records what it measured as a junit property; ``scripts/gpu-check.sh`` prints them.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_inference_model import _adapted

from mfclip_cli.engines.weights.store import resolve_weights
from mfclip_cli.faces import FaceDetector
from mfclip_cli.faces.cascade import integral_images, pyramid_level
from mfclip_cli.faces.pipeline import FaceCropper, FaceSearch
from mfclip_cli.model import load_checkpoint, save_checkpoint
from mfclip_cli.model.explain import explain

pytestmark = pytest.mark.cuda

DEVICE = torch.device("cuda")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BOX_TOLERANCE = 1.0  # pixels, boxes and landmarks
SCORE_TOLERANCE = 1e-3
FP32_PROBABILITY_BOUND = 1e-3
BF16_PROBABILITY_BOUND = 0.01
HEATMAP_CORRELATION = 0.9  # per face, bf16 autocast on CUDA against fp32 on CPU
FINGERPRINT_TOLERANCE = 1e-2  # log power: float32 FFTs of two libraries
FACE_PHOTOS = (
    "astronaut.jpg",
    "astronaut_synthetic_diffusion.png",
    "astronaut_synthetic_gan.png",
    "mosaic_four_faces.jpg",
)


def _photo(name: str) -> np.ndarray:
    with Image.open(EXAMPLES / name) as image:
        return np.array(image.convert("RGB"))


def _large_mosaic() -> np.ndarray:
    """The four-face mosaic at 3072 px: 9.4 megapixels, above the 8.4 at which a uint8 image's
    sums overflow int32, so the CUDA integral image is float64."""
    with Image.open(EXAMPLES / "mosaic_four_faces.jpg") as image:
        large = image.convert("RGB").resize((3072, 3072), Image.Resampling.BICUBIC)
    return np.array(large)


def _box_and_score_differences(found: list, reference: list) -> tuple[float, float]:
    """The largest box or landmark difference (pixels) and score difference between each face of
    ``reference`` and its nearest face in ``found`` (the same count)."""
    assert len(found) == len(reference)
    worst_box = worst_score = 0.0
    for face in reference:
        twin = min(found, key=lambda other: float(np.abs(other.box - face.box).max()))
        worst_box = max(
            worst_box,
            float(np.abs(twin.box - face.box).max()),
            float(np.abs(twin.landmarks - face.landmarks).max()),
        )
        worst_score = max(worst_score, abs(twin.score - face.score))
    return worst_box, worst_score


def test_detection_on_cuda_finds_the_cpu_faces(record_property):
    """Photos of two sizes (so two batches on the device), a face-free one and a 9.4-megapixel
    one: the same faces, at the same places."""
    images = [_photo(name) for name in (*FACE_PHOTOS, "no_face.jpg")] + [_large_mosaic()]
    expected = FaceDetector("cpu").detect(images)
    found = FaceDetector(DEVICE).detect(images)
    assert [len(faces) for faces in expected] == [1, 1, 1, 4, 0, 4]  # the photos hold faces
    worst_box = worst_score = 0.0
    for ours, theirs in zip(found, expected):
        box, score = _box_and_score_differences(ours, theirs)
        worst_box, worst_score = max(worst_box, box), max(worst_score, score)
    record_property("detection_max_box_or_landmark_difference_px", worst_box)
    record_property("detection_max_score_difference", worst_score)
    assert worst_box <= BOX_TOLERANCE and worst_score <= SCORE_TOLERANCE


def test_integral_images_on_cuda_give_the_cpu_pyramid():
    """int32 sums below 8.4 megapixels, float64 above, each giving the CPU's pyramid levels (whose
    int32 sums wrap around on the large photo)."""
    for pixels, dtype in ((_photo("astronaut.jpg"), torch.int32), (_large_mosaic(), torch.float64)):
        images = torch.from_numpy(pixels)[None]
        on_cpu, on_cuda = integral_images(images), integral_images(images.to(DEVICE))
        assert on_cpu.dtype == torch.int32 and on_cuda.dtype == dtype
        height, width = pixels.shape[:2]
        for scale in (0.6, 0.21, 0.013):
            size = int(height * scale + 1), int(width * scale + 1)
            torch.testing.assert_close(
                pyramid_level(on_cuda, *size).cpu(),
                pyramid_level(on_cpu, *size),
                atol=1e-5,
                rtol=0,
            )


def _demo(device) -> torch.nn.Module:
    model, _ = load_checkpoint(resolve_weights("mfclip-demo-tiny").path, device, inference=True)
    return model


def _demo_crops(model) -> torch.Tensor:
    """The examples' faces, aligned on the CPU as the demo model reads them: seven faces."""
    cropper = FaceCropper(FaceSearch(crop_size=model.crop_size, margin=model.crop_margin))
    return torch.cat([faces.crops for faces in cropper([_photo(n) for n in FACE_PHOTOS])])


def _largest_difference(probs: torch.Tensor, reference: torch.Tensor) -> float:
    return float((probs.float().cpu() - reference).abs().max())


def test_the_model_on_cuda_in_fp32_and_under_bf16_autocast_agrees_with_the_cpu(record_property):
    """The demo model (trained: its noise branch contributes) on the examples' faces."""
    reference_model, model = _demo("cpu"), _demo(DEVICE)
    crops = _demo_crops(reference_model)
    with torch.no_grad():
        reference = torch.softmax(reference_model(crops), dim=-1)
        fp32 = torch.softmax(model(crops.to(DEVICE)), dim=-1)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            logits = model(crops.to(DEVICE))
    assert logits.dtype == torch.bfloat16  # the head ran in bf16: autocast took effect
    bf16 = torch.softmax(logits.float(), dim=-1)
    fp32_difference = _largest_difference(fp32, reference)
    bf16_difference = _largest_difference(bf16, fp32.cpu())
    record_property("model_fp32_max_probability_difference", fp32_difference)
    record_property("model_bf16_max_probability_difference", bf16_difference)
    assert len(crops) == 7
    assert fp32_difference <= FP32_PROBABILITY_BOUND
    assert bf16_difference <= BF16_PROBABILITY_BOUND
    assert torch.equal(bf16.argmax(-1).cpu(), reference.argmax(-1))


def test_a_face_scored_on_cuda_gets_its_probabilities_whatever_its_batch(record_property):
    """Audit J (suspected on GPU): under bf16 autocast a face's probabilities may depend on the
    batch it is scored in (cuBLAS picks kernels by shape). Alone, in the batch of seven, and
    among 57 others, and twice: the differences are recorded, no label may change."""
    model = _demo(DEVICE)
    crops = _demo_crops(model).to(DEVICE)
    crowd = torch.cat([crops, crops.flip(-1).repeat(8, 1, 1, 1)])  # 63 faces, the seven first

    def scored(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            return torch.softmax(model(batch).float(), dim=-1)

    together = scored(crops)
    alone = torch.cat([scored(crops[i : i + 1]) for i in range(len(crops))])
    among_others = scored(crowd)[: len(crops)]
    again = scored(crops)
    record_property(
        "bf16_batch_of_one_max_probability_difference", _largest_difference(alone, together.cpu())
    )
    record_property(
        "bf16_batch_of_63_max_probability_difference",
        _largest_difference(among_others, together.cpu()),
    )
    record_property("bf16_same_batch_twice_bitwise_equal", bool(torch.equal(again, together)))
    for other in (alone, among_others, again):
        assert _largest_difference(other, together.cpu()) <= BF16_PROBABILITY_BOUND
        assert torch.equal(other.argmax(-1), together.argmax(-1))


def _trainable_scoring_and_merged(checkpoint: Path) -> list[torch.nn.Module]:
    """The checkpoint on the device as trained (peft's adapters), loaded for scoring (folded by
    hand) and merged there by ``merge_adapters``."""
    trainable, _ = load_checkpoint(checkpoint, DEVICE)
    scoring, _ = load_checkpoint(checkpoint, DEVICE, inference=True)
    merged, _ = load_checkpoint(checkpoint, DEVICE)
    return [trainable.eval(), scoring, merged.eval().merge_adapters()]


def test_merged_inference_model_equals_the_trainable_one_on_cuda(
    tiny_model, faces, tmp_path, record_property
):
    """LoRA folded in by hand and by ``merge_adapters`` on the device gives the trainable model's
    outputs: in fp32 with strong random adapters, and under bf16 autocast with the demo's trained
    ones (random adapters this strong make logits of 10 and more, where bf16 alone moved
    probabilities by 0.006 on the CPU)."""
    path = tmp_path / "adapted.safetensors"
    save_checkpoint(_adapted(tiny_model), path)
    trainable, *folded = _trainable_scoring_and_merged(path)
    with torch.no_grad():
        expected = trainable(faces.to(DEVICE))
        for model in folded:
            torch.testing.assert_close(model(faces.to(DEVICE)), expected, rtol=1e-4, atol=1e-5)

    trainable, *folded = _trainable_scoring_and_merged(resolve_weights("mfclip-demo-tiny").path)
    crops = _demo_crops(trainable).to(DEVICE)
    with torch.no_grad(), torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        expected = torch.softmax(trainable(crops).float(), dim=-1)
        worst = max(
            _largest_difference(torch.softmax(model(crops).float(), dim=-1), expected.cpu())
            for model in folded
        )
    record_property("merged_bf16_max_probability_difference", worst)
    assert worst <= BF16_PROBABILITY_BOUND


def test_explain_under_bf16_autocast_matches_fp32_on_the_cpu(record_property):
    """Heatmaps from a bf16 forward and backward: the same probabilities and noise patches, and
    maps that correlate with the fp32 ones face by face."""
    reference_model, model = _demo("cpu"), _demo(DEVICE)
    crops = _demo_crops(reference_model)
    expected = explain(reference_model, crops)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        result = explain(model, crops.to(DEVICE))
    probability_difference = _largest_difference(result.probs, expected.probs)
    heatmaps = result.heatmaps.float().cpu()
    assert heatmaps.shape == expected.heatmaps.shape and torch.isfinite(heatmaps).all()
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    # a face nothing argues is fake has an all-zero map in fp32, and bf16 rounding may give one
    # of its tokens a trace of relevance, which normalisation makes 1: such faces are left out
    correlations = [
        float(np.corrcoef(ours.flatten().numpy(), theirs.flatten().numpy())[0, 1])
        for ours, theirs in zip(heatmaps, expected.heatmaps)
        if ours.amax() > 0 and theirs.amax() > 0
    ]
    assert len(correlations) >= 5  # of the seven faces, one has an all-zero map in fp32
    record_property("explain_bf16_max_probability_difference", probability_difference)
    record_property("explain_bf16_min_heatmap_correlation", min(correlations))
    assert probability_difference <= BF16_PROBABILITY_BOUND
    assert torch.equal(result.richest_patch.cpu(), expected.richest_patch)
    assert min(correlations) >= HEATMAP_CORRELATION


def test_generator_fingerprints_on_cuda_equal_the_cpu_ones(record_property):
    """cuFFT against pocketfft, both float32: the log power of each cell and ring."""
    from mfclip_cli.scoring.fingerprints import face_fingerprints

    faces = torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    on_cpu = face_fingerprints(faces).numpy()
    on_cuda = face_fingerprints(faces.to(DEVICE)).cpu().numpy()
    largest = float(np.abs(on_cuda - on_cpu).max())
    record_property("fingerprint_max_log_power_difference", largest)
    assert largest <= FINGERPRINT_TOLERANCE
