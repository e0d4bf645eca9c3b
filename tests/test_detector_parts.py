"""MTCNN's networks and box arithmetic, rebuilt without facenet-pytorch's driver or torchvision,
against the library's own functions."""

import numpy as np
import pytest
import torch
from facenet_pytorch.models.mtcnn import ONet as LibraryONet
from facenet_pytorch.models.mtcnn import PNet as LibraryPNet
from facenet_pytorch.models.mtcnn import RNet as LibraryRNet
from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg, rerec
from torchvision.ops import batched_nms as torchvision_batched_nms

from mfclip_cli.faces.boxes import batched_nms, batched_nms_min, regress, square
from mfclip_cli.faces.networks import mtcnn_networks


def _random_boxes(generator: torch.Generator, count: int, groups: int):
    corner = torch.rand(count, 2, generator=generator) * 200 - 20
    extent = torch.rand(count, 2, generator=generator) * 60 + 1
    boxes = torch.cat([corner, corner + extent], 1)
    # few distinct scores, so that ties are common
    scores = torch.randint(0, 40, (count,), generator=generator).float() / 40
    return boxes, scores, torch.randint(0, groups, (count,), generator=generator)


@pytest.mark.parametrize("count,groups", [(1, 1), (50, 1), (300, 3), (1500, 2)])
@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_nms_keeps_what_torchvision_keeps(count, groups, threshold):
    """1,500 boxes take torchvision's per-group path (over 4,000 numbers), fewer its offset
    trick."""
    generator = torch.Generator().manual_seed(count + groups)
    boxes, scores, index = _random_boxes(generator, count, groups)
    expected = torchvision_batched_nms(boxes, scores, index, threshold)
    kept = batched_nms(boxes, scores, index, threshold)
    assert kept.dtype == torch.int64
    # the same boxes, in an order of non-increasing score
    assert sorted(kept.tolist()) == sorted(expected.tolist())
    assert torch.all(scores[kept][1:] <= scores[kept][:-1])
    assert len(batched_nms(boxes[:0], scores[:0], index[:0], threshold)) == 0


@pytest.mark.parametrize("count,groups", [(1, 1), (40, 1), (200, 4)])
def test_min_criterion_nms_equals_the_library(count, groups):
    generator = torch.Generator().manual_seed(7 * count + groups)
    boxes, scores, index = _random_boxes(generator, count, groups)
    scores = scores + torch.rand(count, generator=generator) * 1e-3  # the library's sort: no ties
    expected = batched_nms_numpy(boxes, scores, index, 0.7, "Min")
    assert batched_nms_min(boxes, scores, index, 0.7).tolist() == expected.tolist()


def test_regression_and_squaring_equal_the_library():
    generator = torch.Generator().manual_seed(3)
    boxes, scores, _ = _random_boxes(generator, 64, 1)
    boxes = torch.cat([boxes, scores[:, None]], 1)
    offsets = torch.randn(64, 4, generator=generator) * 0.2
    assert torch.equal(regress(boxes, offsets), bbreg(boxes.clone(), offsets))
    assert torch.equal(square(boxes), rerec(boxes.clone()))


def test_networks_equal_the_library_networks():
    """Our P/R/O-Net definitions hold facenet-pytorch's weights and compute its functions."""
    generator = torch.Generator().manual_seed(0)
    ours = mtcnn_networks()
    library = [net.eval() for net in (LibraryPNet(), LibraryRNet(), LibraryONet())]
    for net, reference, size in zip(ours, library, (37, 24, 48)):
        assert net.state_dict().keys() == reference.state_dict().keys()
        images = torch.rand(5, 3, size, size, generator=generator) * 2 - 1
        with torch.no_grad():
            for mine, theirs in zip(net(images), reference(images)):
                np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
