"""Run by tests/test_distributed.py under torchrun: train, then save this rank's weights.

torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py RECIPE_JSON DATA_DIR OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from sparsify.pipeline.data import load_mnist
from sparsify.pipeline.distributed import distributed
from sparsify.pipeline.recipe import Recipe
from sparsify.pipeline.stages import train


def main() -> None:
    recipe = Recipe.from_dict(json.loads(sys.argv[1]))
    data = load_mnist(sys.argv[2], recipe.data.train_subset, recipe.data.test_subset)
    out = Path(sys.argv[3])
    with distributed("cpu") as dist:
        result = train(recipe, data, progress=False, dist=dist)
        state = {k: v.contiguous() for k, v in result.model.state_dict().items()}
        save_file(
            state,
            str(out / f"rank{dist.rank}.safetensors"),
            metadata={"world_size": str(dist.world_size)},
        )
        (out / f"rank{dist.rank}.json").write_text(json.dumps(result.metrics["test_error"]))


if __name__ == "__main__":
    main()
