"""Deduplication and decontamination on constructed data; bad rows like the data modules."""

from __future__ import annotations

import json
import random

import pytest

from ctem.curation import Decontaminator, DedupSettings, PairDeduplicator, TextNormalizer, curate, find_task_dirs, iter_task_texts, normalize_text, shingles
from ctem.rows import DataFormatError
from tests.curation_helpers import one_torch_thread  # noqa: F401  (autouse fixture)
from tests.curation_helpers import random_text, read_jsonl, write_jsonl


def test_normalize_text_folds_width_case_space_and_punctuation():
    assert normalize_text("Ｈｅｌｌｏ， World！ 你好。") == "helloworld你好"
    assert normalize_text("你好？", strip_punctuation=False) == "你好?"


def test_units_follow_the_script_of_the_text():
    # Chinese is compared by characters (whitespace removed), English by words (collapsed).
    assert normalize_text("A  b\t", lowercase=False, strip_punctuation=False) == "A b"
    assert normalize_text("A b", lowercase=False, units="characters") == "Ab"
    assert normalize_text("你 好", units="words") == "你 好"
    assert shingles("the cat sat down", 3) == {"the cat sat", "cat sat down"}
    assert shingles("你好世界", 3) == {"你好世", "好世界"}
    assert shingles("the cat", 3) == {"the cat"} and shingles("", 3) == set()
    with pytest.raises(ValueError, match="units must be one of"):
        TextNormalizer(units="letters")


def test_english_duplicates_keep_word_boundaries():
    """English near duplicates are found by word shingles; two texts that differ only by
    where the spaces are stay different ("a part" is not "apart")."""
    dedup = PairDeduplicator()
    q = "what are the symptoms of adult acute myeloid leukemia"
    p = " ".join(f"word{i}" for i in range(40))  # 38 word 3-grams
    assert dedup.check(q, p) is None
    assert dedup.check(q.upper() + " ?", "  " + p.replace(" ", "  ")) == "exact_duplicate"
    assert dedup.check(q, p + " word40") == "near_duplicate"  # one 3-gram more: Jaccard 38/39
    exact = PairDeduplicator(near=False)
    assert exact.check("take a part", "x") is None and exact.check("take apart", "x") is None


def _dedup_rows(rng: random.Random) -> tuple[list[dict], list[int]]:
    """Rows and the ids expected to survive deduplication."""
    base = [(random_text(rng, 8), random_text(rng, 60)) for _ in range(6)]
    rows = [{"query": q, "pos": [p], "neg": [], "id": i} for i, (q, p) in enumerate(base)]
    q0, p0 = base[0]
    q1, p1 = base[1]
    rows.append({"query": f" {q0}？", "pos": [p0 + "。"], "neg": [], "id": 6})  # exact after normalising
    rows.append({"query": q1, "pos": [p1[:30] + random_text(rng, 1) + p1[31:]], "neg": [], "id": 7})  # 1 char changed
    rows.append({"query": q0, "pos": [random_text(rng, 60)], "neg": [], "id": 8})  # same query, new positive
    rows.append({"query": base[2][0], "pos": [base[2][1], base[3][1]], "neg": [], "id": 9})  # 1 repeated + 1 new pair
    return rows, [0, 1, 2, 3, 4, 5, 8, 9]


def test_exact_and_near_duplicates_are_removed_keeping_the_first(tmp_path):
    rows, survivors = _dedup_rows(random.Random(0))
    src = write_jsonl(tmp_path / "in" / "train.jsonl", rows)
    report = curate(str(src), tmp_path / "out", dedup=DedupSettings(), show_progress=False)
    out = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert [r["id"] for r in out] == survivors
    assert out[-1]["pos"] == [rows[3]["pos"][0]]  # row 9 loses its repeated pair only
    assert all("score" not in r for r in out)  # no scorer: no score
    total = report.total
    assert total.rows_removed["exact_duplicate"] == 1 and total.rows_removed["near_duplicate"] == 1
    assert total.pairs_removed["exact_duplicate"] == 2 and total.pairs_out == len(survivors)
    assert (total.rows_in, total.rows_out) == (len(rows), len(survivors))


def test_dedup_can_be_exact_only_and_spares_distinct_texts():
    rng = random.Random(1)
    dedup = PairDeduplicator(near=False)
    q, p = random_text(rng, 8), random_text(rng, 60)
    assert dedup.check(q, p) is None
    assert dedup.check(q, p[:30] + "x" + p[31:]) is None  # near duplicate, not checked
    assert dedup.check(q.upper() + "!", p) == "exact_duplicate"
    near = PairDeduplicator()
    texts = [(random_text(rng, 8), random_text(rng, 60)) for _ in range(300)]
    assert all(near.check(a, b) is None for a, b in texts)  # no false positives on random text
    assert near.check(texts[5][0], texts[5][1][1:] + "末") == "near_duplicate"



def test_distinct_questions_about_one_passage_are_all_kept(tmp_path):
    """Reading-comprehension data: many questions share a passage; none is a duplicate."""
    rng = random.Random(4)
    passage = random_text(rng, 400)
    rows = [{"query": random_text(rng, 15), "pos": [passage], "neg": [], "id": i} for i in range(60)]
    rows += [{"query": random_text(rng, 5), "pos": passage, "neg": [], "id": 60 + i} for i in range(5)]  # short queries
    src = write_jsonl(tmp_path / "in" / "qa.jsonl", rows)
    report = curate(str(src), tmp_path / "out", dedup=DedupSettings(), show_progress=False)
    assert [r["id"] for r in read_jsonl(tmp_path / "out" / "qa.jsonl")] == list(range(65))
    assert report.total.rows_out == 65


def test_repeated_and_near_identical_pairs_are_removed_but_shared_sides_are_not():
    rng = random.Random(5)
    dedup = PairDeduplicator()
    query, passage = random_text(rng, 30), random_text(rng, 200)
    assert dedup.check(query, passage) is None
    assert dedup.check(query, passage) == "exact_duplicate"
    assert dedup.check(f"{query}？", f" {passage}。") == "exact_duplicate"  # equal after normalising
    assert dedup.check(query + "吗", passage[:100] + "改" + passage[101:]) == "near_duplicate"
    assert dedup.check(random_text(rng, 30), passage) is None  # another question about the passage
    assert dedup.check(query, random_text(rng, 200)) is None  # the question with another passage
    short = random_text(rng, 4)  # shorter than min_chars: matched exactly only
    assert dedup.check(short, passage) is None
    assert dedup.check(short, passage[:-1] + "改") == "near_duplicate"
    assert dedup.check(short[:-1] + "改", passage) is None

def _eval_tasks(root, rng):
    sts_pairs = [(random_text(rng, 12), random_text(rng, 12)) for _ in range(5)]
    write_jsonl(root / "TaskSTS" / "test.jsonl", [{"sentence1": a, "sentence2": b, "score": 3} for a, b in sts_pairs])
    (root / "TaskSTS" / "task.json").write_text(json.dumps({"name": "TaskSTS", "type": "STS"}), encoding="utf-8")
    corpus = [random_text(rng, 80) for _ in range(5)]
    write_jsonl(root / "TaskRet" / "corpus.jsonl", [{"id": f"d{i}", "text": t, "title": "标题"} for i, t in enumerate(corpus)])
    write_jsonl(root / "TaskRet" / "queries.jsonl", [{"id": "q0", "text": random_text(rng, 15)}])
    write_jsonl(root / "TaskRet" / "qrels.jsonl", [{"qid": "q0", "pid": "d0", "score": 1}])
    write_jsonl(root / "TaskRerank" / "test.jsonl", [{"query": random_text(rng, 10), "positive": [random_text(rng, 30)], "negative": [random_text(rng, 30)]}])
    return sts_pairs, corpus


def test_planted_evaluation_pairs_are_removed_and_counted_per_task(tmp_path):
    rng = random.Random(2)
    sts_pairs, corpus = _eval_tasks(tmp_path / "eval", rng)
    clean = [{"query": random_text(rng, 10), "pos": [random_text(rng, 50)], "neg": [], "id": i} for i in range(5)]
    planted = [
        # an STS pair copied (punctuation added) as a training pair: exact match on query
        {"query": sts_pairs[1][0] + "？", "pos": [sts_pairs[1][1]], "neg": [], "id": 100},
        # a retrieval passage as positive with two characters changed: near duplicate
        {"query": random_text(rng, 10), "pos": [corpus[3][:40] + "改动" + corpus[3][42:]], "neg": [], "id": 101},
    ]
    src = write_jsonl(tmp_path / "train.jsonl", [clean[0], planted[0], *clean[1:3], planted[1], *clean[3:]])
    decon = Decontaminator.from_task_dirs([str(tmp_path / "eval")])
    assert decon.task_sizes == {"TaskRerank": 3, "TaskRet": 11, "TaskSTS": 10}
    report = curate(str(src), tmp_path / "out", decontaminator=decon, show_progress=False)
    out = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert sorted(r["id"] for r in out) == list(range(5))
    assert dict(report.contamination) == {"TaskSTS": 1, "TaskRet": 1}
    assert report.total.rows_removed["contaminated"] == 2
    saved = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert saved["contamination"]["rows_removed_per_task"] == {"TaskRet": 1, "TaskSTS": 1}


def test_task_folders_are_found_one_by_one_or_as_a_parent(tmp_path):
    _eval_tasks(tmp_path / "eval", random.Random(3))
    names = [p.name for p in find_task_dirs(str(tmp_path / "eval"))]
    assert names == ["TaskRerank", "TaskRet", "TaskSTS"]
    assert [p.name for p in find_task_dirs([str(tmp_path / "eval" / "TaskRet")])] == ["TaskRet"]
    with pytest.raises(FileNotFoundError):
        find_task_dirs(str(tmp_path / "missing"))


def test_bad_evaluation_line_names_file_line_and_field(tmp_path):
    write_jsonl(tmp_path / "T" / "test.jsonl", [{"sentence1": "好", "sentence2": "行"}, {"sentence1": 3, "sentence2": "x"}])
    with pytest.raises(DataFormatError, match=r"test.jsonl:2: field 'sentence1'") as err:
        list(iter_task_texts(tmp_path / "T"))
    assert (err.value.file, err.value.line, err.value.field) == (str(tmp_path / "T" / "test.jsonl"), 2, "sentence1")


def test_bad_training_rows_stop_with_location_or_are_counted(tmp_path):
    rows = [
        {"query": "一个问题", "pos": ["一个回答"]},
        '{"query": "坏的", "pos": [}',
        {"query": "另一个问题", "pos": []},
        {"query": "第三个问题", "pos": ["第三个回答"]},
    ]
    src = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataFormatError, match=r"train.jsonl:2: invalid JSON.*\(on_bad_row=skip skips and counts bad rows\)$") as err:
        curate(str(src), tmp_path / "out", show_progress=False)
    assert (err.value.file, err.value.line, err.value.field) == (str(src), 2, None)
    assert list((tmp_path / "out").iterdir()) == []  # no output, no .partial file
    report = curate(str(src), tmp_path / "out", on_bad_row="skip", show_progress=False)
    assert report.total.rows_removed["bad_row"] == 2
    assert (report.total.rows_in, report.total.rows_out) == (4, 2)
    assert any("train.jsonl:3: field 'pos': empty list" in m for m in report.bad_row_examples)
    assert len(read_jsonl(tmp_path / "out" / "train.jsonl")) == 2


def test_output_may_not_overwrite_an_input(tmp_path):
    src = write_jsonl(tmp_path / "train.jsonl", [{"query": "问", "pos": ["答"]}])
    with pytest.raises(ValueError, match="overwrite its input"):
        curate(str(src), tmp_path, show_progress=False)


class _Interrupted(Decontaminator):
    """Raises ``KeyboardInterrupt`` at the ``at``-th row (like Ctrl-C mid-run)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.seen = at, 0

    def match_row(self, query: str, positives: list[str]) -> list[str]:
        self.seen += 1
        if self.seen == self.at:
            raise KeyboardInterrupt
        return super().match_row(query, positives)


def test_an_interrupted_run_leaves_no_partial_output(tmp_path):
    rng = random.Random(6)
    rows = [{"query": random_text(rng, 10), "pos": [random_text(rng, 40)]} for _ in range(6)]
    files = [str(write_jsonl(tmp_path / "in" / "a.jsonl", rows[:3])), str(write_jsonl(tmp_path / "in" / "b.jsonl", rows[3:]))]
    with pytest.raises(KeyboardInterrupt):
        curate(files, tmp_path / "out", dedup=DedupSettings(), decontaminator=_Interrupted(at=5), show_progress=False)
    assert list((tmp_path / "out").iterdir()) == []
