"""Export: the scipy bundle, the compact encoding, ONNX and the footprint table.

Submodules are imported explicitly (``from sparsify.export.encoding import encode``);
``sparsify.export.encoding`` is numpy-only so the torch-free runtime can use it.
"""
