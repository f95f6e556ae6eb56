"""The shell commands that README.md and docs/*.md present as runnable, for tests/test_docs_commands.py.

Extraction: every fenced block opened with ```bash (or ```sh / ```shell) holds commands: one
per line, a line ending in ``\\`` continues on the next, blank lines and ``#`` comment lines
(``#!/bin/bash``, ``#SBATCH ...`` included) are not commands. A command keeps its env-var
prefix (``PRESET=cpu scripts/cpack_pipeline.sh ...``) and its ``&&`` chains.

Markers (the convention is documented at the top of tests/test_docs_commands.py):

* ``<!-- docs-test: skip (REASON) -->`` on the line directly above the opening fence: no
  command of the block runs;
* ``# docs-test: skip (REASON)`` as a trailing comment of a command (on its last line): that
  command does not run;
* ``exit N (MESSAGE)`` instead of ``skip (REASON)``, in either place: the command is documented
  to fail; it runs and must exit with status N and print MESSAGE.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

SHELL_LANGUAGES = ("bash", "sh", "shell")
_BLOCK_MARKER = re.compile(r"^\s*<!--\s*docs-test:(?P<body>.*?)-->\s*$")
_ANY_MARKER = re.compile(r"docs-test:")
_MARKER_BODY = re.compile(r"^\s*(?:skip\s*\((?P<reason>[^()]*(?:\([^()]*\)[^()]*)*)\)|exit\s+(?P<status>\d+)\s*\((?P<message>.*)\))\s*$")
# What a placeholder in a doc looks like: <run>, <time>, DIR, OUT, MODEL, EVAL_TASKS, experiment=...
PLACEHOLDER = re.compile(r"<[A-Za-z_][\w-]*>|(?<![\w/.$-])(?:DIR|OUT|MODEL|EVAL_TASKS|RUN_DIR)(?![\w/-])|=\.\.\.(?!\w)")


class MarkerError(ValueError):
    """A docs-test marker that is malformed or not where it can apply."""


@dataclass(frozen=True)
class DocCommand:
    doc: str  # the doc's path relative to the repository root, e.g. "docs/mining.md"
    line: int  # 1-based line of the command's first line
    text: str  # as written (continuation lines kept), without a trailing comment
    skip: str | None = None  # reason given by a skip marker
    expect_status: int = 0  # exit status an `exit N (...)` marker documents
    expect_message: str | None = None  # text an `exit N (MESSAGE)` marker documents

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def _parse_marker(body: str, where: str) -> tuple[str | None, int, str | None]:
    match = _MARKER_BODY.match(body)
    if not match:
        raise MarkerError(f"{where}: malformed marker 'docs-test:{body}': use 'skip (REASON)' or 'exit N (MESSAGE)'")
    if match["status"] is not None:
        return None, int(match["status"]), match["message"].strip()
    reason = match["reason"].strip()
    if not reason:
        raise MarkerError(f"{where}: a skip marker needs a reason")
    return reason, 0, None


def split_comment(line: str) -> tuple[str, str]:
    """``(code, comment)`` of one shell line: the comment starts at the first ``#`` outside
    quotes that begins a word; ``comment`` is ``""`` when there is none."""
    single = double = False
    for i, char in enumerate(line):
        if char == "\\" and not single:
            continue
        if char == "'" and not double and (i == 0 or line[i - 1] != "\\"):
            single = not single
        elif char == '"' and not single and (i == 0 or line[i - 1] != "\\"):
            double = not double
        elif char == "#" and not single and not double and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i:]
    return line.rstrip(), ""


def extract_commands(text: str, doc: str) -> list[DocCommand]:
    """The commands of every shell block of one Markdown document (``doc`` names it in ids)."""
    lines = text.splitlines()
    commands: list[DocCommand] = []
    block_marker: tuple[str | None, int, str | None] | None = None
    marker_line = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = _BLOCK_MARKER.match(line)
        if marker:
            block_marker = _parse_marker(marker["body"], f"{doc}:{i + 1}")
            marker_line = i + 1
            i += 1
            continue
        stripped = line.strip()
        if stripped.startswith("```"):
            language = stripped[3:].strip().split()[0].lower() if stripped[3:].strip() else ""
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith("```"):
                end += 1
            if language in SHELL_LANGUAGES:
                if block_marker is not None and marker_line != i:
                    raise MarkerError(f"{doc}:{marker_line}: a block marker must be the line directly above the ```bash fence")
                commands += _block_commands(lines, i + 1, end, doc, block_marker)
            elif block_marker is not None:
                raise MarkerError(f"{doc}:{marker_line}: a docs-test marker stands above a ```{language} block, not a shell block")
            block_marker = None
            i = end + 1
            continue
        if block_marker is not None and stripped:
            raise MarkerError(f"{doc}:{marker_line}: a block marker must be the line directly above the ```bash fence")
        i += 1
    if block_marker is not None:
        raise MarkerError(f"{doc}:{marker_line}: a block marker with no shell block below it")
    return commands


def _block_commands(lines: list[str], start: int, end: int, doc: str, block_marker) -> list[DocCommand]:
    commands: list[DocCommand] = []
    pending: list[str] = []
    first = 0
    for index in range(start, end):
        line = lines[index]
        if not pending:
            if not line.strip() or line.lstrip().startswith("#"):
                if _ANY_MARKER.search(line):
                    raise MarkerError(f"{doc}:{index + 1}: a command marker goes at the end of the command's last line")
                continue
            first = index + 1
        pending.append(line)
        if line.rstrip().endswith("\\"):
            continue
        *head, last = pending
        code, comment = split_comment(last)
        if any(_ANY_MARKER.search(split_comment(h)[1]) for h in head):
            raise MarkerError(f"{doc}:{first}: a command marker goes at the end of the command's last line")
        skip, status, message = block_marker or (None, 0, None)
        found = re.match(r"#\s*docs-test:(?P<body>.*)$", comment)
        if found:
            if block_marker is not None:
                raise MarkerError(f"{doc}:{first}: a command marker inside a block that already has a block marker")
            skip, status, message = _parse_marker(found["body"], f"{doc}:{first}")
        elif _ANY_MARKER.search(comment):
            raise MarkerError(f"{doc}:{first}: malformed marker '{comment}'")
        commands.append(DocCommand(doc, first, "\n".join([*head, code]), skip, status, message))
        pending = []
    if pending:
        raise MarkerError(f"{doc}:{first}: the block ends inside a continued command")
    return commands


def doc_files(repo: Path) -> list[Path]:
    """README.md and docs/*.md, in a stable order."""
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def collect(repo: Path) -> list[DocCommand]:
    commands: list[DocCommand] = []
    for path in doc_files(repo):
        commands += extract_commands(path.read_text(encoding="utf-8"), path.relative_to(repo).as_posix())
    return commands


# -- turning a documented command into the command the test runs ----------------------------


def one_line(text: str) -> str:
    """The command with its ``\\``-newline continuations joined."""
    return re.sub(r"\\\n\s*", " ", text)


def substitute(text: str, replacements: Iterable[tuple[str, str]]) -> tuple[str, list[str]]:
    """``text`` with every ``old`` replaced by ``new``; also returns the ``old`` strings used."""
    used = []
    for old, new in replacements:
        if old in text:
            text = text.replace(old, new)
            used.append(old)
    return text, used


def append_args(text: str, args: str) -> str:
    return f"{text} {args}" if args else text


def with_stage_env(text: str, append: Mapping[str, str], replace: Mapping[str, str] = {}) -> str:
    """``VAR=value ... command args`` with ``append``'s values appended to the command's own
    ``VAR=`` prefixes (space separated, so later overrides win) and ``replace``'s set; new
    ones are added in front."""
    tokens = shlex.split(one_line(text))
    assigned: dict[str, str] = {}
    while tokens and re.match(r"^[A-Za-z_]\w*=", tokens[0]):
        name, value = tokens.pop(0).split("=", 1)
        assigned[name] = value
    for name, value in append.items():
        assigned[name] = f"{assigned[name]} {value}".strip() if assigned.get(name) else value
    assigned.update(replace)
    prefix = " ".join(f"{name}={shlex.quote(value)}" for name, value in assigned.items())
    return f"{prefix} {shlex.join(tokens)}".strip()


def placeholders(text: str) -> list[str]:
    return PLACEHOLDER.findall(text)


def fill(template: str, resolve) -> str:
    """``{name}`` in ``template`` replaced by ``resolve(name)`` (a path made by a fixture)."""
    return re.sub(r"\{(\w+)\}", lambda m: str(resolve(m.group(1))), template)


# -- running ---------------------------------------------------------------------------------

# Top-level entries of the checkout that are outputs, never inputs of a documented command:
# not linked into a command's folder, so what a command writes there stays in that folder.
OUTPUT_ENTRIES = {"logs", "outputs", "multirun", "wandb", "results", "data", "vocab", "build", "dist", ".git", ".pytest_cache"}
# Copied, not linked: their scripts find the checkout from their own path
# (``Path(__file__).resolve()``) and write under it (bench/baselines/tfidf_lsa.py into
# logs/baselines/, bench/reproduction.py into logs/reproduction/); a copy keeps that in the
# command's folder.
COPIED_ENTRIES = {"bench", "scripts"}


def repo_view(root: Path, repo: Path, shared_data: Path | None) -> Path:
    """``root/repo``: a folder that looks like the checkout to a command started in it (links
    to its sources and configs, copies of its scripts and benchmarks, nothing of its
    outputs), with ``root/shared/data`` -> ``shared_data`` beside it, as ``../shared/data``
    is beside the checkout. Returns ``root/repo``, the command's working directory."""
    view = root / "repo"
    view.mkdir(parents=True)
    for entry in repo.iterdir():
        if entry.name in OUTPUT_ENTRIES or entry.name.startswith(".venv") or entry.name.endswith(".egg-info"):
            continue
        if entry.name in COPIED_ENTRIES and entry.is_dir():
            shutil.copytree(entry, view / entry.name, symlinks=True, ignore=shutil.ignore_patterns(".venv*", "__pycache__", "logs"))
        else:
            (view / entry.name).symlink_to(entry)
    if shared_data is not None:
        (root / "shared").mkdir()
        (root / "shared" / "data").symlink_to(shared_data)
    return view


def run_shell(command: str, cwd: Path, env: Mapping[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", "set -o pipefail\n" + command],
        cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout,
    )


def offline_env(extra_path: Path, shared_data: Path | None) -> dict[str, str]:
    """The environment of a documented command: this interpreter's bin folder first on PATH
    (``python``, ``ctem-*``), no network, W&B offline."""
    env = {**os.environ, "PATH": f"{extra_path}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline",
               PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false")
    # One torch thread: these runs are short and mostly start-up; on 2 cores that are busy
    # with anything else, two threads each make torch's steps ~10x slower (measured).
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    if shared_data is not None:
        env["CTEM_SHARED_DATA"] = str(shared_data)
    return env
