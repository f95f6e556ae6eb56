"""bench/gpu_check.py at toy sizes on the CPU (``--device cpu``), so the one prepared GPU
check cannot break unseen between the sessions that are lent a GPU."""

from __future__ import annotations

from bench import gpu_check


def test_faiss_part_runs_the_mining_index_and_search(capsys):
    gpu_check.main(["faiss", "--device", "cpu"])
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines() if line.startswith("ROW\t")]
    assert len(rows) == 1 and rows[0][1] == "faiss-gpu mining"
    assert rows[0][3].endswith("top-20 overlap 1.0000")  # the same index and search on both sides
