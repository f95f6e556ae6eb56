"""bench/data_costs.py's memory sampler: it sums a command's whole process tree (a worker's
own memory counts, pages a fork shares with its parent count once) and samples less often
when one sample is slow, so it does not take a core from the command it measures."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from bench import data_costs

# a parent that allocates 150 MB and forks a child that allocates 150 MB of its own and
# keeps (shares) the parent's; both hold it for 2 s
TREE = """
import os, time
import numpy as np
mine = np.ones(150 * 2**20 // 8)
if os.fork() == 0:
    own = np.ones(150 * 2**20 // 8)
    time.sleep(2)
    os._exit(0)
time.sleep(2)
os.wait()
"""


def test_tree_peak_sums_children_and_counts_shared_pages_once() -> None:
    proc = subprocess.Popen([sys.executable, "-c", TREE])
    peak_mb = data_costs.tree_peak_rss(proc, every=0.05) / 2**20
    # 300 MB allocated in all (+ the interpreters and numpy); 450 MB if the shared 150 MB
    # counted in both processes
    assert 290 <= peak_mb < 420, peak_mb


def test_sampler_backs_off_when_a_sample_is_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = []
    real_children = psutil.Process.children

    def slow_children(self, recursive: bool = False):
        samples.append(time.perf_counter())
        time.sleep(0.02)  # a sample that costs 20 ms
        return real_children(self, recursive=recursive)

    monkeypatch.setattr(psutil.Process, "children", slow_children)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    data_costs.tree_peak_rss(proc, every=0.01, overhead=0.05)  # at most 5 %: >= 0.4 s apart
    gaps = [b - a for a, b in zip(samples, samples[1:])]
    assert gaps and min(gaps) >= 0.4, gaps
    assert len(samples) <= 5, len(samples)
