"""The face pipeline: decode evidence files, detect faces (MTCNN), align them for the model.

The names below are loaded on first use (PEP 562), so that reading a report or decoding an image
(``faces.decode``) does not import torch and OpenCV with the detector.
"""

import importlib
from typing import Any

# MTCNN's P-, R- and O-Net score thresholds (facenet-pytorch's defaults); scan's --det-threshold
# sets the last. Here, not in detect.py, so that settings read before torch loads share them.
MTCNN_THRESHOLDS = (0.6, 0.7, 0.7)

_HOMES = {
    "align_faces": "align",
    "template_points": "align",
    "DecodeError": "decode",
    "DecodedImage": "decode",
    "decode_image": "decode",
    "holds_video": "decode",
    "is_media": "decode",
    "is_video": "decode",
    "read_image_bytes": "decode",
    "sample_video": "decode",
    "spread_indices": "decode",
    "Detection": "detect",
    "FaceDetector": "detect",
    "FaceCropper": "pipeline",
    "FaceSearch": "pipeline",
    "FoundFaces": "pipeline",
}

__all__ = sorted([*_HOMES, "MTCNN_THRESHOLDS"])


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
