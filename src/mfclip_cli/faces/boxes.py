"""MTCNN's box arithmetic: non-maximum suppression, box regression and squaring.

The same results as the functions facenet-pytorch's ``detect_face`` uses (torchvision's
``batched_nms``, its own ``batched_nms_numpy``, ``bbreg`` and ``rerec``), without importing
torchvision on the CPU: its import pulls in ``torch._dynamo``, seconds of a one-image scan. On the
CPU the suppression is OpenCV's ``NMSBoxes``, per image (the greedy IoU rule of torchvision:
highest score first, a box dropped when its IoU with a kept one exceeds the threshold); on a GPU
it stays torchvision's CUDA kernel, where start-up time does not matter and a round trip would.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Indices of the boxes [K, 4] (x1 y1 x2 y2) kept by IoU suppression within each group, by
    decreasing score (ties: lower index first)."""
    if boxes.device.type != "cpu":
        from torchvision.ops import batched_nms as torchvision_batched_nms

        return torchvision_batched_nms(boxes, scores, groups, threshold)
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64)
    corners = boxes.detach().to(torch.float64).numpy()
    rectangles = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
    values = scores.detach().to(torch.float64).numpy()
    # OpenCV keeps scores above a non-negative threshold: shifted to >= 1 (the order is unchanged
    # in float64), every box takes part, as in torchvision
    positive = values - values.min() + 1.0
    group_of = groups.numpy()
    kept = []
    for group in np.unique(group_of):
        members = np.flatnonzero(group_of == group)
        chosen = cv2.dnn.NMSBoxes(rectangles[members], positive[members], 0.0, threshold)
        kept.append(members[np.asarray(chosen, dtype=np.int64).reshape(-1)])
    keep = np.concatenate(kept)
    keep = keep[np.lexsort((keep, -values[keep]))]
    return torch.from_numpy(keep)


def batched_nms_min(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float
) -> torch.Tensor:
    """O-Net's suppression: overlap measured over the smaller box (the 'Min' criterion), with
    MTCNN's inclusive pixel extents (+1). facenet-pytorch's ``batched_nms_numpy(..., 'Min')``:
    boxes of different groups are shifted apart, then one greedy pass in numpy."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    offsets = groups.to(boxes) * (boxes.max() + 1)
    shifted = (boxes + offsets[:, None]).cpu().numpy()
    values = scores.cpu().numpy()
    x1, y1, x2, y2 = shifted.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(values)  # the library's order, ties included
    keep = []
    while order.size:
        best, rest = order[-1], order[:-1]
        keep.append(best)
        width = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        height = np.maximum(
            0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1
        )
        overlap = width * height / np.minimum(area[best], area[rest])
        order = rest[overlap <= threshold]
    return torch.as_tensor(np.asarray(keep, dtype=np.int64), device=boxes.device)


def regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Boxes [K, >=4] moved by the networks' regression [K, 4], in units of the inclusive box size
    (``bbreg``); the other columns are kept."""
    size = (boxes[:, 2:4] - boxes[:, 0:2] + 1).repeat(1, 2)
    return torch.cat([boxes[:, :4] + offsets * size, boxes[:, 4:]], 1)


def square(boxes: torch.Tensor) -> torch.Tensor:
    """Each box [K, >=4] grown to a square of its longer side around its centre (``rerec``)."""
    extent = boxes[:, 2:4] - boxes[:, 0:2]
    side = extent.max(1, keepdim=True).values
    corner = boxes[:, 0:2] + extent * 0.5 - side * 0.5
    return torch.cat([corner, corner + side, boxes[:, 4:]], 1)
