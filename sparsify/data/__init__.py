"""Data stage: IDX files on disk -> normalised tensors in memory."""

from sparsify.data.idx import read_idx, write_idx
from sparsify.data.mnist import MnistSplits, default_data_dir, load_mnist

__all__ = ["MnistSplits", "default_data_dir", "load_mnist", "read_idx", "write_idx"]
