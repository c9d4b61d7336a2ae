"""The pre-activation ResNet-50 of the official ``models/resnetv2.py``, with its parameter names, so that the
paper's ResNet checkpoint loads into it unchanged (:mod:`sela_edu.models` has no pre-activation ResNet)."""

from __future__ import annotations

import torch
from torch import nn


class _PreActBottleneck(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1, expansion: int = 4):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, expansion * planes, 1, bias=False)
        if stride != 1 or in_planes != expansion * planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, expansion * planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        out = self.conv3(torch.relu(self.bn3(out)))
        return out + shortcut


class PreActResNet50(nn.Module):
    """Pre-activation ResNet-50 as in the official code: 7x7/2 conv, max-pool, four stages of
    pre-activation bottlenecks (3, 4, 6, 3 blocks; widths 64-128-256-512, x4 out), global average pool.
    No BatchNorm after the last block (as there). Output: N x 2048. ``width`` scales the channels
    (tests use a small one)."""

    def __init__(self, width: int = 64, blocks=(3, 4, 6, 3), in_channels: int = 3):
        super().__init__()
        self.in_planes = width
        stages = []
        for i, n in enumerate(blocks):
            planes = width * 2 ** i
            layers = []
            for s in [1 if i == 0 else 2] + [1] * (n - 1):
                layers.append(_PreActBottleneck(self.in_planes, planes, s))
                self.in_planes = planes * 4
            stages.append(nn.Sequential(*layers))
        self.features = nn.Sequential(nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                                      nn.MaxPool2d(3, stride=2, padding=1), *stages, nn.AdaptiveAvgPool2d(1))
        self.out_dim = self.in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)
