"""Where the memory of ``ctem-mine`` (and of every encode) goes, item by item (issue 22).

``bench/data_costs.py`` measures each command's whole peak; this script splits it:

=============  =================================================================================
rows           ``ctem.mining.read_mining_rows`` of N synthetic pairs (``tracemalloc``: Python
               objects only): each row is kept validated and as read
mining         ``HardNegativeMiner.mine`` over those rows with random D-dimensional vectors for
               a model (``tracemalloc``): its peak above the rows, and the negatives it returns
encode         ``EncoderAdapter`` over T texts with a stand-in model returning random
               ``[B, D]`` vectors (its own process; peak RSS added against the result's size)
finite check   ``check_finite_embeddings`` of a ``[T, D]`` float32 array (its own process)
=============  =================================================================================

Pairs are built from the English pre-training corpus as ``bench/data_costs.py`` builds them.
faiss's index lives outside Python's allocator and is not in the mining row.

Run::

    python bench/memory_items.py --rows 20000 --texts 200000 --dim 768
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.data_costs import sentences, write_pairs  # noqa: E402

MB = 2**20

# Run in a fresh process, so that its peak RSS is its own: argv = part, texts, dim.
CHILD = """
import json, resource, sys
import numpy as np, torch
from torch import nn
part, texts, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

if part == "encode":
    from ctem.encoding import EncoderAdapter

    class Stub(nn.Module):  # an encoder of EncoderAdapter's contract whose forward costs nothing
        query_max_length = passage_max_length = 32
        def __init__(self):
            super().__init__()
            self.dim, self.weight, self.tokenizer = dim, nn.Parameter(torch.zeros(1)), None
        def tokenize(self, batch, max_length):
            return {"rows": torch.zeros(len(batch), 1)}
        def forward(self, rows):
            return torch.randn(len(rows), self.dim)

    items, stub = [f"t{i}" for i in range(texts)], Stub()
    before = peak_mb()
    result = EncoderAdapter(stub, batch_size=256, cache_tokenization=False)(items)
else:
    from ctem.finite import check_finite_embeddings

    result = np.random.default_rng(0).standard_normal((texts, dim), dtype=np.float32)
    before = peak_mb()
    check_finite_embeddings(result)
print(json.dumps({"added_mb": peak_mb() - before, "result_mb": result.nbytes / 2**20}))
"""


def child(part: str, texts: int, dim: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, part, str(texts), str(dim)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def mining_items(rows_file: Path, n: int, dim: int) -> list[tuple[str, str, float, float]]:
    """(item, setting, MB, bytes per row) of the rows and of mining, by ``tracemalloc``."""
    import faiss  # noqa: F401  (imported before tracing: a module's import is not a row's cost)
    import numpy as np

    from ctem.mining import HardNegativeMiner, MiningConfig, read_mining_rows

    def encode(texts: Sequence[str], instruction: str | None = None, is_query: bool = False) -> np.ndarray:
        return np.random.default_rng(len(texts)).standard_normal((len(texts), dim), dtype=np.float32)

    tracemalloc.start()
    rows, _ = read_mining_rows(str(rows_file))
    after_rows = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    result = HardNegativeMiner(encode, MiningConfig(index="flat", show_progress=False)).mine(rows)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(result.negatives) == n
    return [
        ("rows", f"{n:,} pairs", after_rows / MB, after_rows / n),
        ("mining, peak above the rows", f"{n:,} rows, pool {result.pool_size:,}, {dim} dims", (peak - after_rows) / MB, (peak - after_rows) / n),
        ("mining, negatives returned", f"{n:,} rows x up to 15", (held - after_rows) / MB, (held - after_rows) / n),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000, help="pairs read and mined")
    parser.add_argument("--mine-dim", type=int, default=64, help="embedding width of the mining part (data_costs' model: 64)")
    parser.add_argument("--texts", type=int, default=200_000, help="texts encoded / checked")
    parser.add_argument("--dim", type=int, default=768, help="embedding width of the encode and check parts")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(tmp) / "pairs.jsonl"
        write_pairs(rows_file, args.rows, sentences(), seed=0)
        table = mining_items(rows_file, args.rows, args.mine_dim)
    for part, label in (("encode", "encode (EncoderAdapter), peak added"), ("finite", "finite check, peak added")):
        measured = child(part, args.texts, args.dim)
        table.append((label, f"{args.texts:,} x {args.dim} (result {measured['result_mb']:,.0f} MB)", measured["added_mb"],
                      measured["added_mb"] * MB / args.texts))  # fmt: skip
    print("| item | setting | MB | bytes per row or text |\n|---|---|---|---|")
    for item, setting, mb, per in table:
        print(f"| {item} | {setting} | {mb:,.1f} | {per:,.0f} |")


if __name__ == "__main__":
    main()
