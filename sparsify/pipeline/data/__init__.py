"""Data stage: IDX files on disk -> normalised tensors in memory."""

from sparsify.pipeline.data.idx import read_idx, write_idx
from sparsify.pipeline.data.mnist import MnistSplits, default_data_dir, load_mnist

__all__ = ["MnistSplits", "default_data_dir", "load_mnist", "read_idx", "write_idx"]
