"""Regenerate the example inputs in this folder (deterministic; see LICENSES.md).

    python examples/make_examples.py [--check]

Uses only the package (``mfclip_cli.data.synth`` ships the public-domain astronaut) plus, for the
face-free image, scikit-image's ``data.coffee()`` (a test dependency). ``--check`` runs
facenet-pytorch's MTCNN over the results and fails unless every file has the expected number of
faces.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from mfclip_cli.data.synth import apply_artifact, random_view, real_sources, warp_view

HERE = Path(__file__).resolve().parent
SEED = 2024
GAN_GENERATOR = "synth-gan-checker4"
DIFFUSION_GENERATOR = "synth-diff-lowpass"
ORIENTATION = 0x0112  # EXIF tag

# file -> faces a correct reader should find
# (exif: after applying the orientation; video: per frame)
EXPECTED_FACES = {
    "astronaut.jpg": 1,
    "astronaut_synthetic_gan.png": 1,
    "astronaut_synthetic_diffusion.png": 1,
    "no_face.jpg": 0,
    "mosaic_four_faces.jpg": 4,
    "astronaut_exif_rotated.jpg": 1,
    "astronaut_clip.mp4": 1,
}


def astronaut() -> np.ndarray:
    return dict(real_sources())["astronaut"]


def save_jpeg(path: Path, rgb: np.ndarray, quality: int = 92, **options) -> None:
    Image.fromarray(rgb).save(path, format="JPEG", quality=quality, optimize=True, **options)


def make(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    base = astronaut()
    save_jpeg(out / "astronaut.jpg", base, quality=95)

    # One artifact over the whole image; PNG keeps it intact.
    Image.fromarray(apply_artifact(base, GAN_GENERATOR, np.random.default_rng(SEED))).save(
        out / "astronaut_synthetic_gan.png", optimize=True
    )
    Image.fromarray(apply_artifact(base, DIFFUSION_GENERATOR, np.random.default_rng(SEED))).save(
        out / "astronaut_synthetic_diffusion.png", optimize=True
    )

    from skimage import data  # test dependency; only this script needs it

    save_jpeg(out / "no_face.jpg", data.coffee(), quality=90)

    # 2x2 mosaic of four augmented views (256 px each) of the astronaut.
    views = [
        random_view(base, "astronaut", np.random.default_rng([SEED, 1, i]), size=256)
        for i in range(4)
    ]
    mosaic = np.concatenate(
        [np.concatenate(views[:2], axis=1), np.concatenate(views[2:], axis=1)], axis=0
    )
    save_jpeg(out / "mosaic_four_faces.jpg", mosaic)

    # Pixels stored rotated 90 degrees counter-clockwise; EXIF Orientation 6 says "rotate 90 degrees
    # clockwise to display", so a correct reader shows the upright astronaut.
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    stored = Image.fromarray(base).transpose(Image.Transpose.ROTATE_90)
    stored.save(
        out / "astronaut_exif_rotated.jpg",
        format="JPEG",
        quality=92,
        optimize=True,
        exif=exif.tobytes(),
    )

    # 2.5 s at 10 fps: a slow zoom, pan and tilt over the astronaut, 288 x 288 px.
    frames, size = 25, 288
    writer = cv2.VideoWriter(
        str(out / "astronaut_clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (size, size)
    )
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write mp4v video here")
    try:
        for t in np.linspace(0.0, 1.0, frames):
            frame = warp_view(
                base,
                "astronaut",
                scale=0.95 + 0.3 * t,
                angle=8.0 * np.sin(2 * np.pi * t),
                centre=(size * (0.42 + 0.16 * t), size * (0.34 + 0.04 * t)),
                size=size,
            )
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def count_faces(out: Path) -> dict[str, list[int]]:
    """MTCNN face counts per file (per frame for the video), as a reader that honours EXIF sees
    it."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, device="cpu")

    def faces(rgb: np.ndarray) -> int:
        boxes, _ = mtcnn.detect(Image.fromarray(np.ascontiguousarray(rgb)))
        return 0 if boxes is None else len(boxes)

    counts: dict[str, list[int]] = {}
    for name in EXPECTED_FACES:
        path = out / name
        if path.suffix == ".mp4":
            capture = cv2.VideoCapture(str(path))
            counts[name] = []
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                counts[name].append(faces(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
            capture.release()
        else:
            with Image.open(path) as image:
                counts[name] = [faces(np.asarray(ImageOps.exif_transpose(image).convert("RGB")))]
    return counts


def check(out: Path) -> bool:
    ok = True
    for name, per_item in count_faces(out).items():
        good = bool(per_item) and all(n == EXPECTED_FACES[name] for n in per_item)
        ok &= good
        detail = (
            f"{len(per_item)} frames, faces {sorted(set(per_item))}"
            if len(per_item) > 1
            else f"faces {per_item[0]}"
        )
        print(f"{'ok ' if good else 'BAD'} {name}: {detail} (expected {EXPECTED_FACES[name]})")

    with Image.open(out / "astronaut_exif_rotated.jpg") as stored:
        raw = np.asarray(stored.convert("RGB"), dtype=np.float64)
        upright = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"), dtype=np.float64)
    reference = np.asarray(Image.open(out / "astronaut.jpg").convert("RGB"), dtype=np.float64)
    error = np.abs(upright - reference).mean() if upright.shape == reference.shape else np.inf
    good = (
        error < 4.0 and np.abs(raw - reference).mean() > 20.0
    )  # upright matches; the stored pixels do not
    ok &= good
    print(
        f"{'ok ' if good else 'BAD'} astronaut_exif_rotated.jpg: exif_transpose gives the "
        f"upright image (mean |diff| {error:.2f})"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--check", action="store_true", help="count faces with MTCNN afterwards")
    args = parser.parse_args()
    make(args.out)
    for name in [*EXPECTED_FACES]:
        print(f"{name}: {(args.out / name).stat().st_size} bytes")
    return 0 if not args.check or check(args.out) else 1


if __name__ == "__main__":
    sys.exit(main())
