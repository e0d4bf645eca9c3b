"""MTCNN's three networks, with the weights that facenet-pytorch ships, built without importing it.

facenet-pytorch's package imports its whole driver on import, and with it torchvision, whose
``ops`` import ``torch._dynamo``: 2-3 s of a one-image scan's start-up on a 2-core CPU. The
networks themselves are nine small layers each; they are defined here with the library's layer
names, so its weight files load into them unchanged. The files are found through the package's
import spec (which does not run the package) and read with ``torch.load(weights_only=True)``,
which unpickles tensors only.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import torch
from torch import nn

from mfclip_cli.errors import WeightsError


def _conv(channels_in: int, channels_out: int, kernel: int) -> tuple[nn.Conv2d, nn.PReLU]:
    return nn.Conv2d(channels_in, channels_out, kernel_size=kernel), nn.PReLU(channels_out)


class PNet(nn.Module):
    """Proposal network: a fully convolutional 12 px face / non-face classifier with box
    regression."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 10, 3)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv(10, 16, 3)
        self.conv3, self.prelu3 = _conv(16, 32, 3)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(box regression [N, 4, H', W'], face / non-face probabilities [N, 2, H', W'])."""
        x = self.pool1(self.prelu1(self.conv1(images)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refinement network on 24 px crops."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 28, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv(28, 48, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = _conv(48, 64, 2)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(box regression [K, 4], face / non-face probabilities [K, 2])."""
        x = self.pool1(self.prelu1(self.conv1(crops)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # the weights were trained (in Caffe) on features flattened width-major
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(len(x), -1)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output network on 48 px crops: score, box regression and five landmarks."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 32, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv(32, 64, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = _conv(64, 64, 3)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = _conv(64, 128, 2)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(box regression [K, 4], landmarks [K, 10] (5 x, then 5 y), probabilities [K, 2])."""
        x = self.pool1(self.prelu1(self.conv1(crops)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(len(x), -1)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


def _weights_folder() -> Path:
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("facenet-pytorch is not installed: it carries MTCNN's weights")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@functools.cache
def _weights(name: str) -> dict[str, torch.Tensor]:
    path = _weights_folder() / f"{name}.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as error:
        raise WeightsError(f"cannot read MTCNN's {name} weights at {path}: {error}") from error


def mtcnn_networks() -> tuple[PNet, RNet, ONet]:
    """P-Net, R-Net and O-Net with facenet-pytorch's weights, in eval mode, on the CPU."""
    networks = (PNet(), RNet(), ONet())
    for name, network in zip(("pnet", "rnet", "onet"), networks):
        network.load_state_dict(_weights(name))
        network.eval().requires_grad_(False)
    return networks
