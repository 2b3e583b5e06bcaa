"""The network as images leave it: inference, export (a Clip in the ONNX graph), plugins and the
pictures of a run. Training and the loss see the raw output (the study's `johnson` has an unbounded
linear head), everything a person or a video frame gets is clamped to [0, 255] here, in one place."""

from __future__ import annotations

import torch
from torch import nn

LOW, HIGH = 0.0, 255.0

# what export and the runtimes read off a loaded model (build_model / load_model set them)
_FORWARDED = ("stylestream_config", "stylestream_card")


class InferenceModel(nn.Module):
    """`net` with its output clamped to [0, 255]; its weights live under `net`."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        for attr in _FORWARDED:
            if hasattr(net, attr):
                setattr(self, attr, getattr(net, attr))
        self.train(net.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).clamp(LOW, HIGH)


def inference_model(model: nn.Module) -> InferenceModel:
    """`model` wrapped so its output is clamped to [0, 255] (the same wrapper when already wrapped)."""
    return model if isinstance(model, InferenceModel) else InferenceModel(model)
