"""The face pipeline: decode evidence files, detect faces (MTCNN), align them for the model."""

from mfclip_cli.faces.align import align_faces, template_points
from mfclip_cli.faces.decode import (
    DecodedImage,
    DecodeError,
    decode_image,
    is_media,
    is_video,
    sample_video,
)
from mfclip_cli.faces.detect import Detection, FaceDetector
from mfclip_cli.faces.pipeline import FaceCropper, FaceSearch, FoundFaces

__all__ = [
    "DecodeError",
    "DecodedImage",
    "Detection",
    "FaceCropper",
    "FaceDetector",
    "FaceSearch",
    "FoundFaces",
    "align_faces",
    "decode_image",
    "is_media",
    "is_video",
    "sample_video",
    "template_points",
]
