"""A stand-in for SLURM's ``sbatch`` and ``scontrol`` on one machine, for tests of the
SLURM executor path: ``sbatch`` runs every task of the script's job array right away, one
after another (as ``sbatch --wait`` returns once the array has ended), with the variables
SLURM sets, each task's output to the script's ``--output`` file; it exits with the first
failing task's status. ``install(folder)`` writes both commands into ``folder``."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

SBATCH = r'''
import itertools, os, re, subprocess, sys
from pathlib import Path

args, script = sys.argv[1:-1], sys.argv[-1]
text = Path(script).read_text()
directive = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", text, flags=re.M))
counter = Path(os.environ["FAKE_SLURM_STATE"]) / "jobs"
job = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(job))
env = dict(os.environ)
for arg in args:
    if arg.startswith("--export=ALL,"):
        env.update(kv.split("=", 1) for kv in arg[len("--export=ALL,"):].split(","))
first, last = map(int, directive.get("array", "0-0").split("%")[0].split("-"))
for task in range(first, last + 1):
    env.update(SLURM_JOB_ID=str(job), SLURM_ARRAY_JOB_ID=str(job), SLURM_ARRAY_TASK_ID=str(task), SLURM_NODELIST="localhost")
    log = Path(directive.get("output", os.devnull).replace("%A", str(job)).replace("%a", str(task)))
    with open(log, "a") as out:
        status = subprocess.run(["bash", script], env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if status:
        sys.exit(status)
print(f"Submitted batch job {job}")
'''

SCONTROL = r'''
import sys
if sys.argv[1:3] == ["show", "hostnames"]:
    print("\n".join(sys.argv[3].split(",")))
'''


def install(folder: Path) -> Path:
    """Write ``sbatch`` and ``scontrol`` into ``folder`` (run by this interpreter); ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in (("sbatch", SBATCH), ("scontrol", SCONTROL)):
        path = folder / name
        path.write_text(f"#!{sys.executable}\n{body}", encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return folder


def environment(folder: Path) -> dict[str, str]:
    """PATH with the fake commands and this interpreter's scripts (``launch_pickled_pipeline``)
    first, and the fake's state folder."""
    path = os.pathsep.join([str(folder), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {"PATH": path, "FAKE_SLURM_STATE": str(folder)}
