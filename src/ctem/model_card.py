"""The model card (``README.md``) of an exported model folder.

:func:`render_model_card` turns a dict of facts about a trained model into a Hugging Face /
sentence-transformers model card: YAML front matter (``library_name``, ``pipeline_tag``,
``tags``, ``base_model``, ``language``), then what the model is, how it was trained, the
query instruction it records, the latest evaluation results and usage snippets. It is a
pure function; :func:`write_model_card` writes its output atomically. The facts of a
training run are gathered at export time by ``ctem.modules.export.model_card_facts``.

Facts (all optional except ``stage``; unknown ones are ignored)::

    stage                "contrastive" | "multitask" | "retromae" (or another name)
    stage_description    what the stage trains (its module's ``stage_description``)
    name                 title of the card
    base_model           hub id the training started from (front matter ``base_model``)
    started_from         hub id or local folder the training started from (None: from scratch)
    architecture         backbone config: model_type, hidden_size, num_hidden_layers, ...
    parameters           number of backbone parameters
    languages            ISO codes, e.g. ["zh"]
    data                 {"files": [...]} | {"hub_dataset": name} | {"datasets": {name: {...}}}
    hyperparameters      {name: value}, in the order to show (batch_size, learning_rate, steps, ...)
    pooling, normalize, query_max_length, passage_max_length, embedding_dim
    query_instruction    the recorded retrieval-query instruction ("" or None: none)
    results              [{"task", "type", "main_metric", "main_score"}, ...]
    results_step         global step of those results
    ctem_version
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from ctem.files import atomic_writer

MODEL_CARD_NAME = "README.md"
TAGS = ["sentence-transformers", "feature-extraction", "sentence-similarity", "ctem"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_hub_id(name: str | None) -> bool:
    """Whether ``name`` looks like a Hugging Face hub model id (not an existing local path)."""
    return bool(name) and bool(_HUB_ID.match(str(name))) and not Path(str(name)).exists() and ".." not in str(name)


def languages_hint(instruction: str | None, base_model: str | None, inherited: Any = None, data: str | None = None) -> list[str]:
    """Languages known from what is recorded: the training data's (``data``: the data
    module's ``language``, ``conf/lang``), a model card the training started from
    (``inherited``: its ``language``), the hub id (``...-zh...``, ``...-en...``,
    ``chinese``) and the query instruction's script. Empty when nothing says."""
    found: list[str] = [data] if data else []
    if isinstance(inherited, str):
        inherited = [inherited]
    found += [str(x) for x in inherited or []]
    name = (base_model or "").lower()
    if re.search(r"(^|[-_/])zh([-_.]|$)", name) or "chinese" in name:
        found.append("zh")
    if re.search(r"(^|[-_/])en([-_.]|$)", name) or "english" in name:
        found.append("en")
    if instruction:
        found.append("zh" if re.search(r"[\u4e00-\u9fff]", instruction) else "en" if instruction.isascii() else "")
    return [x for x in dict.fromkeys(found) if x]


def read_front_matter(folder: str | os.PathLike) -> dict[str, Any]:
    """The YAML front matter of ``folder/README.md`` (``{}`` when there is none)."""
    path = Path(folder) / MODEL_CARD_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    try:
        data = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value)
    return str(value)


def _code(text: Any) -> str:
    return f"`{text}`" if "`" not in str(text) else str(text)


def front_matter(facts: Mapping[str, Any]) -> dict[str, Any]:
    """The card's YAML metadata."""
    meta: dict[str, Any] = {"library_name": "sentence-transformers", "pipeline_tag": "sentence-similarity", "tags": list(TAGS)}
    if facts.get("base_model"):
        meta["base_model"] = facts["base_model"]
    if facts.get("languages"):
        meta["language"] = list(facts["languages"])
    return meta


def _training_section(facts: Mapping[str, Any]) -> list[str]:
    stage = str(facts.get("stage") or "unknown")
    lines = ["## Training", "", f"- **Stage**: `{stage}`: {facts.get('stage_description') or 'a ctem training stage'}."]
    started, arch = facts.get("started_from"), dict(facts.get("architecture") or {})
    arch_text = ", ".join(f"{k} {_value(v)}" for k, v in arch.items() if k != "model_type" and v is not None)
    if started:
        where = "the hub model" if is_hub_id(started) else "the local folder"
        lines.append(f"- **Started from**: {where} {_code(started)}.")
    else:
        lines.append(f"- **Started from**: scratch, a randomly initialised `{arch.get('model_type', '?')}` ({arch_text}).")
    if started and arch:
        lines.append(f"- **Architecture**: `{arch.get('model_type', '?')}` ({arch_text}).")
    if facts.get("parameters"):
        lines.append(f"- **Parameters**: {int(facts['parameters']):,}.")
    data = dict(facts.get("data") or {})
    if data.get("files"):
        files = data["files"] if isinstance(data["files"], (list, tuple)) else [data["files"]]
        lines.append("- **Training data**: " + ", ".join(_code(f) for f in files) + ".")
    if data.get("hub_dataset"):
        lines.append(f"- **Training data**: the hub dataset {_code(data['hub_dataset'])}.")
    if data.get("datasets"):
        lines += ["- **Training data** (one dataset per batch):", ""]
        lines += ["  | dataset | type | rows | files |", "  |---|---|---|---|"]
        for name, spec in data["datasets"].items():
            files = spec.get("files")
            files = files if isinstance(files, (list, tuple)) else [files]
            rows = spec.get("rows")
            lines.append(
                f"  | {name} | {spec.get('type') or 'from rows'} | {'' if rows is None else rows} | {', '.join(_code(f) for f in files)} |"
            )
        lines.append("")
    hyper = dict(facts.get("hyperparameters") or {})
    if hyper:
        lines += ["", "| hyper-parameter | value |", "|---|---|"]
        lines += [f"| {name} | {_value(value)} |" for name, value in hyper.items() if value is not None]
    return lines


def _model_section(facts: Mapping[str, Any]) -> list[str]:
    normalize = facts.get("normalize")
    rows = [
        ("embedding dimension", facts.get("embedding_dim")),
        ("pooling", facts.get("pooling")),
        ("normalised", None if normalize is None else (f"{_value(normalize)} (cosine = dot product)" if normalize else "no")),
        ("query max length (tokens)", facts.get("query_max_length")),
        ("passage max length (tokens)", facts.get("passage_max_length")),
    ]
    rows = [(k, v) for k, v in rows if v is not None]
    if not rows:
        return []
    return ["## Model", "", "| setting | value |", "|---|---|", *(f"| {k} | {_value(v)} |" for k, v in rows)]


def _instruction_section(facts: Mapping[str, Any]) -> list[str]:
    instruction = facts.get("query_instruction") or ""
    if not instruction:
        return [
            "## Query instruction",
            "",
            "Query instruction: none. Queries and passages are encoded as they are "
            "(`ctem_config.json` records `query_instruction: \"\"`).",
        ]
    return [
        "## Query instruction",
        "",
        f"Query instruction: `{instruction}`",
        "",
        "Retrieval queries were trained with this text prepended; prepend it to queries (not to "
        "passages) for retrieval. It is recorded in `ctem_config.json` (`query_instruction`) and as "
        "the sentence-transformers prompt `query`; `ctem-eval` evaluates with it.",
    ]


def _results_section(facts: Mapping[str, Any]) -> list[str]:
    results = list(facts.get("results") or [])
    if not results:
        return []
    step = facts.get("results_step")
    when = f" at step {step}" if step is not None else ""
    lines = ["## Evaluation", "", f"Latest evaluation during training{when} (main score of each task):", ""]
    lines += ["| task | type | main metric | main score |", "|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['type']} | {r['main_metric']} | {float(r['main_score']):.4f} |" for r in results]
    if len(results) > 1:
        mean = sum(float(r["main_score"]) for r in results) / len(results)
        lines.append(f"| **average** | | | {mean:.4f} |")
    return lines


_HF_POOLING = {
    "cls": "emb = out.last_hidden_state[:, 0]  # [CLS] pooling",
    "mean": (
        "mask = batch[\"attention_mask\"].unsqueeze(-1).float()  # mean pooling over real tokens\n"
        "emb = (out.last_hidden_state * mask).sum(1) / mask.sum(1)"
    ),
    "last": (
        "last = (batch[\"attention_mask\"] * torch.arange(batch[\"attention_mask\"].size(1))).argmax(1)  # last real token\n"
        "emb = out.last_hidden_state[torch.arange(len(last)), last]"
    ),
}


def _usage_section(facts: Mapping[str, Any]) -> list[str]:
    instruction = facts.get("query_instruction") or ""
    pooling = facts.get("pooling") or "cls"
    normalize = facts.get("normalize", True)
    qlen = facts.get("query_max_length") or 64
    st_query = 'model.encode(queries, prompt_name="query")  # prepends the recorded instruction' if instruction else "model.encode(queries)"
    hf_query = f"[{instruction!r} + q for q in queries]" if instruction else "queries"
    lines = [
        "## Usage",
        "",
        "Replace `MODEL` with this folder's path (or its hub id once uploaded).",
        "",
        "sentence-transformers:",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        'model = SentenceTransformer("MODEL")',
        'queries, passages = ["..."], ["...", "..."]',
        f"q = {st_query}",
        "p = model.encode(passages)",
        "scores = model.similarity(q, p)",
        "```",
        "",
        f"transformers ({pooling} pooling{', L2-normalised' if normalize else ''}):",
        "",
        "```python",
        "import torch",
        "from transformers import AutoModel, AutoTokenizer",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("MODEL")',
        'model = AutoModel.from_pretrained("MODEL").eval()',
        'queries = ["..."]',
        f'batch = tokenizer({hf_query}, padding=True, truncation=True, max_length={qlen}, return_tensors="pt")',
        "with torch.no_grad():",
        "    out = model(**batch)",
        _HF_POOLING.get(pooling, _HF_POOLING["cls"]),
    ]
    if normalize:
        lines.append("emb = torch.nn.functional.normalize(emb, dim=-1)")
    lines += [
        "```",
        "",
        "ctem (pooling, normalisation and the instruction restored from `ctem_config.json`):",
        "",
        "```python",
        "from ctem import TextEncoder",
        "",
        'encoder = TextEncoder.from_pretrained("MODEL")',
        'emb = encoder.encode(["..."], instruction=encoder.query_instruction, is_query=True)',
        "```",
    ]
    return lines


def render_model_card(facts: Mapping[str, Any]) -> str:
    """The model card (Markdown with YAML front matter) for ``facts`` (see the module doc)."""
    stage = str(facts.get("stage") or "unknown")
    name = facts.get("name") or f"ctem {stage} model"
    meta = yaml.safe_dump(front_matter(facts), sort_keys=False, allow_unicode=True).strip()
    dim = facts.get("embedding_dim")
    what = (
        f"A text-embedding model trained with ctem (the C-Pack / BGE recipe)"
        f"{f': it maps a text to a {dim}-dimensional vector' if dim else ''} for retrieval, semantic "
        "similarity, clustering and classification."
    )
    if stage == "retromae":
        what += (
            " This is a RetroMAE pre-trained encoder: a starting point for contrastive training "
            "(`stage=contrastive model=hf model.name_or_path=<this folder>`), not yet a tuned "
            "embedding model."
        )
    sections = [
        [f"# {name}", "", what],
        _training_section(facts),
        _model_section(facts),
        _instruction_section(facts),
        _results_section(facts),
        _usage_section(facts),
    ]
    if facts.get("ctem_version"):
        sections.append([f"*Card written by ctem {facts['ctem_version']} when the model was exported.*"])
    body = "\n\n".join("\n".join(s).strip("\n") for s in sections if s)
    return f"---\n{meta}\n---\n\n{body}\n"


def write_model_card(folder: str | os.PathLike, facts: Mapping[str, Any]) -> Path:
    """Write ``folder/README.md`` from ``facts`` atomically (a temporary file in the folder,
    then ``os.replace``), with the user's umask. Returns its path."""
    folder = Path(folder)
    target = folder / MODEL_CARD_NAME
    text = render_model_card(facts)
    with atomic_writer(target) as handle:
        handle.write(text)
    return target
