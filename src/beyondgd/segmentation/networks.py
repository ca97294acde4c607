"""A small fully-convolutional segmentation network (no torchvision).

Any ``nn.Module`` that maps ``(B, C, H, W)`` images to ``(B, K, H, W)`` logits works with the
trainers; this one is a compact encoder-decoder whose deepest stage is dilated, so a 64x64 scene
is inside its receptive field (about 60 pixels) while most of the compute runs at 1/2 and 1/4
resolution, which keeps CPU training fast.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from beyondgd.core import check_choice, check_int

NORMS = ("batch", "group")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":  # at most 8 groups; always divides the channels
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    return nn.BatchNorm2d(channels)


def _block(
    c_in: int, c_out: int, *, stride: int = 1, dilation: int = 1, norm: str = "batch"
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        _norm(norm, c_out),
        nn.ReLU(inplace=True),
    )


class SegNet(nn.Module):
    """Encoder-decoder with skip connections and a dilated bottleneck; returns logits.

    Parameters
    ----------
    in_channels, n_classes
        Image channels and number of labels K.
    width
        Channels of the full-resolution stage; the 1/2 and 1/4 stages use 2x and 4x.
    norm
        ``"batch"`` (``BatchNorm2d``; statistics over the batch, which under data parallelism
        need ``SyncBatchNorm``, a CUDA feature) or ``"group"`` (``GroupNorm`` with
        ``gcd(channels, 8)`` groups: per-image statistics, so the output of an image does not
        depend on the rest of the batch and training on several ranks needs no synchronisation
        of the normalisation, on any device).

    Examples
    --------
    >>> net = SegNet(3, 4, width=8)
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 4, 32, 32])
    >>> SegNet(3, 4, width=8, norm="group").norm
    'group'
    """

    def __init__(
        self, in_channels: int = 3, n_classes: int = 2, width: int = 16, norm: str = "batch"
    ):
        super().__init__()
        check_int("in_channels", in_channels, low=1)
        self.n_classes = check_int("n_classes", n_classes, low=2)
        w = check_int("width", width, low=1)
        self.norm = n = check_choice("norm", norm, NORMS)
        self.stem = nn.Sequential(_block(in_channels, w, norm=n), _block(w, w, norm=n))
        self.down1 = nn.Sequential(_block(w, 2 * w, stride=2, norm=n), _block(2 * w, 2 * w, norm=n))
        self.down2 = nn.Sequential(
            _block(2 * w, 4 * w, stride=2, norm=n),
            _block(4 * w, 4 * w, dilation=2, norm=n),
            _block(4 * w, 4 * w, dilation=4, norm=n),
        )
        self.up1 = _block(6 * w, 2 * w, norm=n)
        self.up0 = _block(3 * w, w, norm=n)
        self.head = nn.Conv2d(w, n_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
        f0 = self.stem(images)
        f1 = self.down1(f0)
        f2 = self.down2(f1)
        u1 = F.interpolate(f2, size=f1.shape[-2:], mode="bilinear", align_corners=False)
        u1 = self.up1(torch.cat([u1, f1], 1))
        u0 = F.interpolate(u1, size=f0.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.up0(torch.cat([u0, f0], 1)))


def save_segnet(path, model: SegNet, *, class_names: list[str] | None = None, **meta) -> None:
    """Write ``model`` (weights and the arguments that rebuild it) to ``path`` atomically."""
    from beyondgd.core import atomic_torch_save

    if not isinstance(model, SegNet):
        raise TypeError(f"model must be a SegNet, got {type(model).__name__}")
    state = {
        "kind": "beyondgd.SegNet",
        "in_channels": model.stem[0][0].in_channels,
        "n_classes": model.n_classes,
        "width": model.stem[0][0].out_channels,
        "norm": model.norm,
        "class_names": list(class_names) if class_names is not None else None,
        "meta": meta,
        "state_dict": model.state_dict(),
    }
    atomic_torch_save(path, state)


def load_segnet(path) -> tuple[SegNet, dict]:
    """Rebuild a network written by :func:`save_segnet`; returns ``(model, info)`` where
    ``info`` has ``class_names`` and the saved ``meta``."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not its own
        raise ValueError(
            f"{path} is not a model written by beyondgd (`segment train` / save_segnet): "
            f"torch.load could not read it ({type(exc).__name__})"
        ) from exc
    if not isinstance(state, dict) or state.get("kind") != "beyondgd.SegNet":
        raise ValueError(
            f"{path} is not a model written by beyondgd (`segment train` / save_segnet): it "
            "holds no beyondgd.SegNet"
        )
    model = SegNet(
        state["in_channels"],
        state["n_classes"],
        width=state["width"],
        norm=state.get("norm", "batch"),  # files written before the option have batch norm
    )
    model.load_state_dict(state["state_dict"])
    model.eval()
    return model, {"class_names": state["class_names"], "meta": state["meta"]}
