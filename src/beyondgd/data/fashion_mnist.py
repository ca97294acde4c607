"""Fashion-MNIST from IDX files (the Debian package ``dataset-fashion-mnist`` by default).

The same reader loads real MNIST IDX files: point ``path`` (or ``BEYONDGD_FASHION_MNIST``) at any
folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from beyondgd.core import check_choice, check_int

DEFAULT_PATH = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "BEYONDGD_FASHION_MNIST"
_INSTALL_HINT = (
    "install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass path= / set "
    f"{ENV_VAR} to a folder with the IDX files (train-images-idx3-ubyte.gz, ...)"
)


class DataNotFoundError(FileNotFoundError):
    """A data set is not on this machine; the message says how to get it."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped): big-endian header, then unsigned bytes."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape))
    if len(data) - offset != expected:
        raise ValueError(
            f"{path}: header says {expected} bytes of data, file has {len(data) - offset}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).exists():
            return folder / name
    raise DataNotFoundError(
        f"Fashion-MNIST file {stem}[.gz] not found in {folder}; {_INSTALL_HINT}"
    )


def load_fashion_mnist(
    split: str = "train",
    *,
    path: str | os.PathLike | None = None,
    limit: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] of shape (N, 28, 28) and integer labels of shape (N,).

    Parameters
    ----------
    split
        ``"train"`` (60,000 images) or ``"test"`` (10,000).
    path
        Folder with the IDX files; default ``$BEYONDGD_FASHION_MNIST`` or ``/usr/share/datasets/
        fashion-mnist``.
    limit
        Keep only the first ``limit`` images (the files are already shuffled).

    Examples
    --------
    >>> x, y = load_fashion_mnist("test", limit=100)
    >>> x.shape, y.shape
    (torch.Size([100, 28, 28]), torch.Size([100]))
    """
    check_choice("split", split, ("train", "test"))
    if limit is not None:
        check_int("limit", limit, low=1)
    folder = Path(path or os.environ.get(ENV_VAR) or DEFAULT_PATH)
    if not folder.is_dir():
        raise DataNotFoundError(f"Fashion-MNIST folder {folder} does not exist; {_INSTALL_HINT}")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).to(dtype)
    return x, torch.from_numpy(labels.astype(np.int64))
