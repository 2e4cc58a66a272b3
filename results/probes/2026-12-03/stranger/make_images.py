"""Three classes of 20x20 RGB noise, brighter per class: 40 train / 12 test images each."""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

root = Path(sys.argv[1])
rng = np.random.default_rng(0)
for split, n in (("train", 40), ("test", 12)):
    for c in range(3):
        d = root / split / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray((rng.random((20, 20, 3)) * 80 + c * 60).astype(np.uint8)).save(
                d / f"{i}.png"
            )
