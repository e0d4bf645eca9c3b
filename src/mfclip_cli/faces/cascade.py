"""MTCNN's three-stage cascade over a batch of images, with facenet-pytorch's networks and weights.

The arithmetic is the library's ``detect_face``: the same scale pyramid (area interpolation), the
same thresholds, non-maximum suppressions and box regressions. What differs is how the work is
laid out. The library resamples the whole image once per pyramid level and cuts each candidate
box for R-Net and O-Net with one ``interpolate`` call in a Python loop (about 90 calls per 1024 px
photo, 40 % of its CPU time, and a device round trip per box on a GPU). Here one integral image
per batch gives every pyramid level and every box's crop by gathers, with the very same area
averages, and the networks run channels-last. Boxes, scores and landmarks agree with the library's
to float rounding (``tests/test_faces.py`` compares them on real photos).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from mfclip_cli.faces import MTCNN_THRESHOLDS
from mfclip_cli.faces.boxes import batched_nms, batched_nms_min, regress, square
from mfclip_cli.faces.networks import PNet, mtcnn_networks

MTCNN_MIN_WINDOW = 12  # P-Net's receptive field: the smallest face MTCNN can see at scale 1


def _area_bins(
    start: torch.Tensor, length: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds [first, end) of ``size`` area-interpolation bins over ``length`` pixels from
    ``start``.

    These are ``adaptive_avg_pool``'s bins (``interpolate(mode="area")``): floor(i L / n) to
    ceil((i + 1) L / n). ``start`` and ``length`` are [K]; the results are [K, size].
    """
    i = torch.arange(size, device=start.device)
    first = start[:, None] + torch.div(i * length[:, None], size, rounding_mode="floor")
    end = start[:, None] - torch.div(-(i + 1) * length[:, None], size, rounding_mode="floor")
    return first, end


def integral_images(images: torch.Tensor) -> torch.Tensor:
    """[B, H + 1, W + 1, 3] sums of uint8 [B, H, W, 3] images, from which every bin sum is exact.

    On CPU they are OpenCV's int32 sums, which wrap around modulo 2^32 on images of 8.4 megapixels
    and more: every difference of them is then taken modulo 2^32 (``_differences``), and that is
    the exact sum, since no bin of a uint8 image sums to 2^32. Half the bytes of float64 sums, and
    the large photos that need them are those whose pyramid gathers are memory-bound. On a GPU, by
    cumulative sums: int32 where they cannot overflow, else float64.
    """
    if (
        images.device.type == "cpu"
    ):  # OpenCV's integral is several times faster than two torch cumsums
        return torch.from_numpy(
            np.stack([cv2.integral(image, sdepth=cv2.CV_32S) for image in images.numpy()])
        )
    height, width = images.shape[1:3]
    return cumulative_sums(images, torch.int32 if 255 * height * width < 2**31 else torch.float64)


def cumulative_sums(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The integral image by two cumulative sums, on any device."""
    sums = images.cumsum(1, dtype=dtype).cumsum(2, dtype=dtype)
    return F.pad(sums, (0, 0, 1, 0, 1, 0))


def _differences(later: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
    """``later - earlier`` of integral-image values as float32; int32 values modulo 2^32 (they may
    wrap)."""
    if later.dtype != torch.int32:
        return (later - earlier).to(torch.float32)
    if later.device.type == "cpu":  # numpy's unsigned arithmetic wraps by definition
        wrapped = np.subtract(later.numpy().view(np.uint32), earlier.numpy().view(np.uint32))
        return torch.from_numpy(wrapped.astype(np.float32))
    return (
        (later.to(torch.int64) - earlier.to(torch.int64)).bitwise_and_(0xFFFFFFFF).to(torch.float32)
    )


def _means(sums: torch.Tensor, area: torch.Tensor) -> torch.Tensor:
    """Pixel means from sums [..., 3] and bin areas [...], normalised as the networks expect,
    channels first."""
    scale = 0.0078125 / area.unsqueeze(-1).to(torch.float32)
    return sums.to(torch.float32).mul_(scale).sub_(127.5 * 0.0078125).movedim(-1, -3)


def pyramid_level(integral: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The whole images area-resampled to ``height`` x ``width``: [B, 3, height, width],
    channels-last, normalised.

    Equal, to float32 rounding, to ``interpolate(images, (height, width), mode="area")``: two
    gathers of the integral image instead of a pass over the whole image per level (2x faster on
    CPU).
    """
    zero = torch.zeros(1, dtype=torch.int64, device=integral.device)
    rows_first, rows_end = (b[0] for b in _area_bins(zero, zero + integral.shape[1] - 1, height))
    cols_first, cols_end = (b[0] for b in _area_bins(zero, zero + integral.shape[2] - 1, width))
    # whole rows: a fast copy
    rows = _differences(integral.index_select(1, rows_end), integral.index_select(1, rows_first))
    sums = _column_differences(rows, cols_first, cols_end)
    return _means(sums, (rows_end - rows_first)[:, None] * (cols_end - cols_first)[None, :])


REMAP_MAX_SIDE = 32767  # OpenCV's remap takes images up to this many pixels a side


def _column_differences(rows: torch.Tensor, first: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """``rows[:, :, end] - rows[:, :, first]`` for float32 rows [B, h, W + 1, 3]: [B, h, w, 3].

    On CPU torch gathers along a middle dimension element by element (17 of the 40 ms that a
    1024 px photo's pyramid took on one thread); OpenCV's nearest-neighbour remap does the same
    gather 7x faster.
    """
    if rows.device.type != "cpu" or max(rows.shape[1:3]) > REMAP_MAX_SIDE:
        return rows.index_select(2, end) - rows.index_select(2, first)
    at_end, at_first = (
        _remap_maps(rows.shape[1], tuple(end.tolist())),
        _remap_maps(rows.shape[1], tuple(first.tolist())),
    )
    gathered = [
        cv2.subtract(
            cv2.remap(image, at_end, None, cv2.INTER_NEAREST),
            cv2.remap(image, at_first, None, cv2.INTER_NEAREST),
        )
        for image in rows.numpy()
    ]
    return torch.from_numpy(np.stack(gathered))


# two photo sizes' pyramids: about 25 MB for 1024 px, 60 MB for 1600 px
@functools.lru_cache(maxsize=48)
def _remap_maps(rows: int, columns: tuple[int, ...]) -> np.ndarray:
    """The (x, y) map that gathers ``columns`` from each of ``rows`` rows; kept, since every photo
    of a size reuses it."""
    y = np.broadcast_to(np.arange(rows, dtype=np.float32)[:, None], (rows, len(columns)))
    x = np.broadcast_to(np.asarray(columns, dtype=np.float32)[None, :], (rows, len(columns)))
    maps = np.stack([x, y], -1)
    maps.flags.writeable = False
    return maps


def cut_boxes(
    integral: torch.Tensor, image_index: torch.Tensor, boxes: torch.Tensor, size: int
) -> torch.Tensor:
    """Area-resample the pixel rectangles ``boxes`` [K, 4] (x0, y0, x1, y1, end-exclusive) to
    [K, 3, size, size].

    Equal to ``interpolate(image[:, y0:y1, x0:x1], (size, size), mode="area")`` box by box,
    normalised. The four corners of every bin come in one ``index_select`` of the flattened
    integral image (2-3x faster on CPU than four advanced-indexing gathers).
    """
    rows_first, rows_end = _area_bins(boxes[:, 1], boxes[:, 3] - boxes[:, 1], size)
    cols_first, cols_end = _area_bins(boxes[:, 0], boxes[:, 2] - boxes[:, 0], size)
    height, width = integral.shape[1:3]
    rows = (
        torch.stack([rows_end, rows_first, rows_end, rows_first])[..., None]
        + image_index[:, None, None] * height
    )
    cols = torch.stack([cols_end, cols_end, cols_first, cols_first])[:, :, None, :]
    corners = (
        integral.view(-1, 3)
        .index_select(0, (rows * width + cols).flatten())
        .view(4, len(boxes), size, size, 3)
    )
    if (
        corners.dtype == torch.int32
    ):  # sums that may wrap around: exact modulo 2^32 (see integral_images)
        corners = corners.to(torch.int64)
        sums = (corners[0] - corners[1] - corners[2] + corners[3]).bitwise_and_(0xFFFFFFFF)
    else:
        sums = corners[0] - corners[1] - corners[2] + corners[3]
    return _means(sums, (rows_end - rows_first)[:, :, None] * (cols_end - cols_first)[:, None, :])


def _pixel_rectangles(
    boxes: torch.Tensor, width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The library's ``pad``: truncate the boxes to integers and clip them to the image.

    Returns end-exclusive rectangles [K, 4] and which of them are non-empty.
    """
    whole = boxes[:, :4].trunc().to(torch.int64)
    x0 = whole[:, 0].clamp(min=1) - 1
    y0 = whole[:, 1].clamp(min=1) - 1
    x1 = whole[:, 2].clamp(max=width)
    y1 = whole[:, 3].clamp(max=height)
    return torch.stack([x0, y0, x1, y1], 1), (x1 > x0) & (y1 > y0)


def _max_pool_2x2(pixels: torch.Tensor) -> torch.Tensor:
    """``max_pool2d(kernel 2, stride 2, ceil_mode=True)`` of [N, H, W, C] contiguous maps, as
    [N, H', W', C].

    Two element-wise maxima of strided views: 2.5x faster on CPU than ``max_pool2d`` on
    channels-last maps.
    """
    count, height, width, channels = pixels.shape
    rows = pixels.new_empty(count, (height + 1) // 2, width, channels)
    torch.maximum(pixels[:, 0 : height - 1 : 2], pixels[:, 1:height:2], out=rows[:, : height // 2])
    if height % 2:  # ceil mode: the last window holds one row
        rows[:, -1] = pixels[:, -1]
    pooled = pixels.new_empty(count, rows.shape[1], (width + 1) // 2, channels)
    torch.maximum(
        rows[:, :, 0 : width - 1 : 2], rows[:, :, 1:width:2], out=pooled[:, :, : width // 2]
    )
    if width % 2:
        pooled[:, :, -1] = rows[:, :, -1]
    return pooled


class ProposalNet(torch.nn.Module):
    """P-Net rearranged for speed; the same function as facenet-pytorch's ``PNet`` to float
    rounding.

    P-Net spends 40 % of its CPU time outside its convolutions, on full-resolution PReLU and
    max-pooling and on two 1x1 heads. Here:

    - PReLU is applied after pooling. For a non-negative slope PReLU is monotonic, so
      pool(prelu(x)) = prelu(pool(x)); for a negative slope s, prelu(x) = max(x, s x) and
      pool(prelu(x)) = max(pool(x), |s| pool(-x)). The first convolution also computes -x for the
      negative-slope channels (16 outputs run faster than 10), so one pooling pass gives both.
    - The face probability softmax(l)[1] is sigmoid(l1 - l0): one dot product per position. The
      box regression is computed only where the probability passes the threshold.
    """

    def __init__(self, pnet: PNet):
        super().__init__()
        slopes = pnet.prelu1.weight.detach()
        negative = (slopes < 0).nonzero().flatten()
        steep = (slopes > 1).nonzero().flatten()  # prelu(x) = min(x, s x) there, not max
        shallow = ((slopes >= 0) & (slopes <= 1)).nonzero().flatten()
        order = torch.cat([steep, shallow, negative])  # the pooled channels, regrouped
        self.channels, self.steep, self.monotonic = (
            len(order),
            len(steep),
            len(steep) + len(shallow),
        )
        weight, bias = pnet.conv1.weight.detach(), pnet.conv1.bias.detach()
        self.register_buffer(
            "conv1_weight",
            torch.cat([weight[order], -weight[negative]]).contiguous(
                memory_format=torch.channels_last
            ),
        )
        self.register_buffer("conv1_bias", torch.cat([bias[order], -bias[negative]]))
        self.register_buffer("monotonic_slopes", slopes[order[: self.monotonic]].clone())
        self.register_buffer("negative_slopes", slopes[negative].abs())
        self.register_buffer(
            "conv2_weight",
            pnet.conv2.weight.detach()[:, order].contiguous(memory_format=torch.channels_last),
        )
        self.register_buffer("conv2_bias", pnet.conv2.bias.detach().clone())
        self.conv3, self.prelu2, self.prelu3 = pnet.conv3, pnet.prelu2, pnet.prelu3
        logits_weight, logits_bias = (
            pnet.conv4_1.weight.detach().flatten(1),
            pnet.conv4_1.bias.detach(),
        )
        self.register_buffer("face_weight", logits_weight[1] - logits_weight[0])
        self.register_buffer("face_bias", logits_bias[1] - logits_bias[0])
        self.register_buffer(
            "regression_weight", pnet.conv4_2.weight.detach().flatten(1).t().contiguous()
        )
        self.register_buffer("regression_bias", pnet.conv4_2.bias.detach().clone())

    def _pooled_activations(self, images: torch.Tensor) -> torch.Tensor:
        """pool(prelu(conv1(images))) as a channels-last [N, 10, H', W'], channels in the regrouped
        order."""
        pooled = _max_pool_2x2(
            F.conv2d(images, self.conv1_weight, self.conv1_bias).permute(0, 2, 3, 1)
        )
        values, monotonic = pooled[..., : self.channels], self.monotonic
        other = torch.empty_like(values)
        torch.mul(values[..., :monotonic], self.monotonic_slopes, out=other[..., :monotonic])
        torch.mul(pooled[..., self.channels :], self.negative_slopes, out=other[..., monotonic:])
        activations = torch.maximum(values, other)
        if self.steep:
            torch.minimum(
                values[..., : self.steep],
                other[..., : self.steep],
                out=activations[..., : self.steep],
            )
        return activations.permute(0, 3, 1, 2)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position face probability [N, H', W'] and P-Net's features [N, H', W', 32] for the
        regression."""
        hidden = self.prelu2(
            F.conv2d(self._pooled_activations(images), self.conv2_weight, self.conv2_bias)
        )
        features = self.prelu3(self.conv3(hidden)).permute(0, 2, 3, 1)
        logits = torch.mv(features.reshape(-1, features.shape[-1]), self.face_weight).add_(
            self.face_bias
        )
        return torch.sigmoid_(logits).view(features.shape[:3]), features

    def candidates(
        self, images: torch.Tensor, scale: float, threshold: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The library's ``generateBoundingBox``: windows [K, 9] (x1 y1 x2 y2 score, regression)
        and their image."""
        probabilities, features = self(images)
        passed = probabilities >= threshold
        where = passed.nonzero()
        regression = torch.addmm(self.regression_bias, features[passed], self.regression_weight)
        corner = where[:, 1:].flip(1).to(regression.dtype) * 2  # stride 2, 12 px window
        windows = [((corner + 1) / scale).floor(), ((corner + MTCNN_MIN_WINDOW) / scale).floor()]
        return torch.cat([*windows, probabilities[passed][:, None], regression], 1), where[:, 0]


class MTCNNCascade:
    """P-Net over a scale pyramid, then R-Net and O-Net on every candidate of a batch at once."""

    def __init__(
        self,
        device: torch.device | str = "cpu",
        thresholds: tuple[float, float, float] = MTCNN_THRESHOLDS,
        factor: float = 0.709,
    ):
        self.device = torch.device(device)
        self.thresholds = tuple(thresholds)
        self.factor = factor
        pnet, rnet, onet = mtcnn_networks()  # facenet-pytorch's weights
        self.rnet, self.onet = (
            net.to(self.device, memory_format=torch.channels_last) for net in (rnet, onet)
        )
        self.pnet = ProposalNet(pnet).eval().to(self.device, memory_format=torch.channels_last)

    def scales(self, height: int, width: int, min_size: float) -> list[float]:
        """The pyramid's scales: the first maps ``min_size`` onto P-Net's 12 px window."""
        scale = MTCNN_MIN_WINDOW / min_size
        shortest = min(height, width) * scale
        scales = []
        while shortest >= MTCNN_MIN_WINDOW:
            scales.append(scale)
            scale *= self.factor
            shortest *= self.factor
        return scales

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, min_size: float
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(boxes [N, 5] x1 y1 x2 y2 score, landmarks [N, 5, 2]) for each of the uint8 images
        [B, H, W, 3]."""
        batch, height, width = images.shape[:3]
        integral = integral_images(images)
        boxes, image_index = self._propose(integral, min_size)
        landmarks = torch.zeros(0, 5, 2, device=self.device)
        if len(boxes):
            boxes, image_index = self._refine(integral, boxes, image_index, width, height)
        if len(boxes):
            boxes, image_index, landmarks = self._output(
                integral, boxes, image_index, width, height
            )
        boxes, landmarks, image_index = (
            boxes.cpu().numpy(),
            landmarks.cpu().numpy(),
            image_index.cpu().numpy(),
        )
        return [(boxes[image_index == b], landmarks[image_index == b]) for b in range(batch)]

    def _propose(
        self, integral: torch.Tensor, min_size: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1: P-Net candidates from every pyramid level, suppressed per level and image, then
        per image."""
        height, width = integral.shape[1] - 1, integral.shape[2] - 1
        found, found_index = [], []
        for scale in self.scales(height, width, min_size):
            level = pyramid_level(integral, int(height * scale + 1), int(width * scale + 1))
            candidates, index = self.pnet.candidates(level, scale, self.thresholds[0])
            keep = batched_nms(candidates[:, :4], candidates[:, 4], index, 0.5)
            found.append(candidates[keep])
            found_index.append(index[keep])
        if not found:  # the image is smaller than the smallest face asked for
            return torch.zeros(0, 5, device=self.device), torch.zeros(
                0, dtype=torch.int64, device=self.device
            )
        boxes, image_index = torch.cat(found), torch.cat(found_index)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], image_index, 0.7)
        boxes, image_index = boxes[keep], image_index[keep]
        size = (boxes[:, 2:4] - boxes[:, 0:2]).repeat(1, 2)
        corrected = boxes[:, :4] + boxes[:, 5:9] * size
        return square(torch.cat([corrected, boxes[:, 4:5]], 1)), image_index

    def _score_crops(self, net, crop_size, threshold, integral, boxes, image_index, width, height):
        """Run R-Net or O-Net on every candidate's crop; keep those scoring above ``threshold``.

        Returns the kept boxes with their new score [K, 5], their image index, and the network's
        other outputs (regression, then O-Net's landmarks) for the kept candidates.
        """
        rectangles, valid = _pixel_rectangles(boxes, width, height)
        boxes, image_index, rectangles = boxes[valid], image_index[valid], rectangles[valid]
        *outputs, probabilities = net(cut_boxes(integral, image_index, rectangles, crop_size))
        score = probabilities[:, 1]
        passed = score > threshold
        kept = torch.cat([boxes[passed, :4], score[passed, None]], 1)
        return kept, image_index[passed], [output[passed] for output in outputs]

    def _refine(self, integral, boxes, image_index, width, height):
        """Stage 2: R-Net scores and regresses every candidate."""
        boxes, image_index, (regression,) = self._score_crops(
            self.rnet, 24, self.thresholds[1], integral, boxes, image_index, width, height
        )
        keep = batched_nms(boxes[:, :4], boxes[:, 4], image_index, 0.7)
        return square(regress(boxes[keep], regression[keep])), image_index[keep]

    def _output(self, integral, boxes, image_index, width, height):
        """Stage 3: O-Net scores, regresses and places the five landmarks; overlaps resolved by the
        'Min' criterion."""
        boxes, image_index, (regression, points) = self._score_crops(
            self.onet, 48, self.thresholds[2], integral, boxes, image_index, width, height
        )
        extent = boxes[:, 2:4] - boxes[:, 0:2] + 1
        landmarks = (
            torch.stack([points[:, :5], points[:, 5:]], 2) * extent[:, None, :]
            + boxes[:, None, 0:2]
            - 1
        )
        boxes = regress(boxes, regression)
        keep = batched_nms_min(boxes[:, :4], boxes[:, 4], image_index, 0.7)
        return boxes[keep], image_index[keep], landmarks[keep]
