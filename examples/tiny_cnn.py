"""A small CNN for 3 x 32 x 32 photos: the torch factory of suites/your_model.yaml.

`build()` is what a suite names as `factory: ../examples/tiny_cnn.py:build`: it takes no
arguments and returns the module; the trained weights come from a separate file
(examples/make_examples.py writes them as .safetensors).
"""

from __future__ import annotations

import torch
from torch import nn

CLASSES = 6


class TinyCNN(nn.Module):
    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def build() -> nn.Module:
    return TinyCNN()
