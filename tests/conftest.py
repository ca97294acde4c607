import gzip
import struct

import numpy as np
import pytest
import torch

# The tests' problems are small: one intra-op thread is fastest, and more threads than free
# cores slow small ops down many times over.
torch.set_num_threads(1)


@pytest.fixture
def results_dir(tmp_path):
    return tmp_path / "results"


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def write_fashion_mnist():
    """``write(folder, train=(images, labels), test=(images, labels))`` writes a stand-in with
    Fashion-MNIST's IDX layout, so loaders and experiments run without the Debian package."""

    def write(folder, *, train, test):
        folder.mkdir(parents=True, exist_ok=True)
        for prefix, (images, labels) in (("train", train), ("t10k", test)):
            _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.asarray(images))
            _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.asarray(labels))
        return folder

    return write
