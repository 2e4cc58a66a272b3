"""``python -m sparsify`` (and ``torchrun -m sparsify``) runs the CLI."""

import sys

from sparsify.cli import main

sys.exit(main())
