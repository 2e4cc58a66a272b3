"""One line per bench cell: the fastest sparsify backend against ORT dense and DeepSparse.

    python3 results/bench/peers_avx2/summarize.py results/bench/peers_avx2/*/bench.json
"""

import json
import sys

PEERS = ("dense", "ort_dense", "deepsparse")
for path in sys.argv[1:]:
    for s in json.load(open(path))["sources"]:
        for p in s["points"]:
            b = p["backends"]
            ours = [k for k in b if k not in PEERS and b[k].get("available")]
            t, k = min((b[k]["median_s"], k) for k in ours)
            ort, ds = b["ort_dense"]["median_s"], b.get("deepsparse", {}).get("median_s")
            wrong = [k for k in b if not b[k].get("same_predictions", True)]
            print(
                f"{s['label'][:36]:36s} threads {p['threads']} batch {p['batch']:3d}: {k} "
                f"{t * 1e3:.3f} ms; ORT dense / it {ort / t:.2f}x; DeepSparse / it "
                f"{'-' if ds is None else f'{ds / t:.2f}x'}"
                + (f"; predictions differ: {wrong}" if wrong else "")
            )
