"""`TextEncoder`: a Hugging Face backbone plus pooling and optional L2 normalisation.

The one embedding model of ctem. Training modules call ``forward`` on token tensors;
evaluation, mining and users call ``encode`` on strings. ``save_pretrained`` writes a
folder that loads unchanged in ``transformers`` (``AutoModel``) and in
``sentence-transformers`` (``SentenceTransformer``), with the same embeddings.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedTokenizerBase

from ctem.encoding import EncoderAdapter
from ctem.files import COMPLETE_MARKER, check_complete, staged_folder, write_complete_marker
from ctem.instructions import resolve_instruction
from ctem.lora import LoraConfig, merged_backbone
from ctem.packing import packed_hidden
from ctem.remote_code import check_remote_code, refused_remote_code
from ctem.tokenization import check_local_or_hub, check_max_length, load_tokenizer

Pooling = Literal["cls", "mean", "last"]
POOLING_MODES: tuple[str, ...] = ("cls", "mean", "last")
CTEM_CONFIG_NAME = "ctem_config.json"


# sentence-transformers (v2 .. v6 read this layout) pooling flags for each ctem pooling.
_ST_POOLING_FLAGS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "last": "pooling_mode_lasttoken",
}


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token states ``[B, L, H]`` with mask ``[B, L]`` (1 = real token) into ``[B, H]``.

    ``cls`` takes position 0; ``mean`` averages real tokens; ``last`` takes the last real
    token of each row (works for left and right padding).
    """
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    if pooling == "last":
        positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
        last = (attention_mask.long() * positions).argmax(dim=1)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLING_MODES}")


@dataclass
class EncoderSpec:
    """Everything of a ``TextEncoder`` but its weights: the tokenizer and the settings, each
    the given value, else the one the model folder saved, else the default. Loading one reads
    the tokenizer files only (not the weights), so the settings are checked (and the data
    built on the tokenizer) before a large model is downloaded or loaded."""

    tokenizer: PreTrainedTokenizerBase
    tokenizer_source: str
    pooling: str
    normalize: bool
    query_max_length: int
    passage_max_length: int
    query_instruction: str | None
    matryoshka_dims: list[int] | None

    @classmethod
    def load(
        cls,
        name_or_path: str | None = None,
        tokenizer: str | None = None,
        pooling: Pooling | None = None,
        normalize: bool | None = None,
        query_max_length: int | None = None,
        passage_max_length: int | None = None,
        query_instruction: str | None = None,
        trust_remote_code: bool = False,
    ) -> "EncoderSpec":
        """The spec of ``TextEncoder(name_or_path=..., tokenizer=..., ...)`` (same arguments,
        same errors: a missing folder, code the folder ships, an unknown pooling, a length
        the tokenizer cannot use)."""
        if name_or_path:
            check_local_or_hub(name_or_path, "model")  # a missing folder is named as the model, not its tokenizer
        for source in dict.fromkeys(s for s in (name_or_path, tokenizer) if s):
            _check_ctem_folder(source)
            check_remote_code(source, trust_remote_code)
        saved = _read_saved_settings(name_or_path) if name_or_path else {}
        pooling = pooling or saved.get("pooling", "cls")
        if pooling not in POOLING_MODES:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLING_MODES}")
        tok_source = tokenizer or name_or_path
        if tok_source is None:
            raise ValueError("a model built from `config` needs a `tokenizer` (folder or vocab.txt)")
        with refused_remote_code(tok_source):
            loaded = load_tokenizer(tok_source, trust_remote_code)
        spec = cls(
            tokenizer=loaded,
            tokenizer_source=tok_source,
            pooling=pooling,
            normalize=saved.get("normalize", True) if normalize is None else normalize,
            # None: the saved limit (0 is a setting too, refused below: it never means the default)
            query_max_length=saved.get("query_max_length", 64) if query_max_length is None else query_max_length,
            passage_max_length=saved.get("passage_max_length", 256) if passage_max_length is None else passage_max_length,
            query_instruction=resolve_instruction(query_instruction if query_instruction is not None else saved.get("query_instruction")),
            matryoshka_dims=saved.get("matryoshka_dims"),
        )
        check_max_length(loaded, spec.query_max_length, "query_max_length")
        check_max_length(loaded, spec.passage_max_length, "passage_max_length")
        return spec

    @classmethod
    def of(cls, **settings: Any) -> "EncoderSpec":
        """The spec of ``TextEncoder(**settings)`` (a ``model`` config node), its weights
        unread: the settings about them (``config``, ``lora``, ``compile``, ...) are only
        checked to be ``TextEncoder``'s."""
        unknown = sorted(set(settings) - set(inspect.signature(TextEncoder.__init__).parameters) - {"self", "spec"})
        if unknown:
            raise TypeError(f"TextEncoder got unexpected settings {unknown}")
        _check_one_source(settings.get("name_or_path"), settings.get("config"))
        wanted = inspect.signature(cls.load).parameters
        return cls.load(**{key: value for key, value in settings.items() if key in wanted})


def _check_one_source(name_or_path: str | None, config: dict[str, Any] | None) -> None:
    if (name_or_path is None) == (config is None):
        raise ValueError("TextEncoder needs exactly one of `name_or_path` or `config`")


class TextEncoder(nn.Module):
    """Embeds text with a transformer backbone.

    Args:
        name_or_path: HF hub id or local folder of a pretrained model (``AutoModel``). A
            folder written by ``save_pretrained`` also restores pooling, normalisation and
            max lengths unless given here.
        config: instead of ``name_or_path``, a dict for ``AutoConfig.for_model`` (must hold
            ``model_type``, e.g. ``bert``) to build a randomly initialised backbone.
        tokenizer: tokenizer folder / hub id, or a WordPiece ``vocab.txt``; defaults to
            ``name_or_path``.
        pooling: ``cls`` (BGE), ``mean`` or ``last``.
        normalize: L2-normalise embeddings (cosine = dot product).
        query_max_length / passage_max_length: token limits used by data collators and
            ``encode(..., is_query=...)``.
        gradient_checkpointing: recompute activations in backward to save memory.
        attn_implementation: ``sdpa`` (fused attention where transformers supports it),
            ``eager`` or ``None`` (library default).
        query_instruction: the instruction of retrieval queries (text, or a name of
            ``ctem.instructions.NAMED_INSTRUCTIONS``): ``""`` none, ``None`` unknown. Training
            sets it to the one its queries train with; saving records it in
            ``ctem_config.json`` and as the sentence-transformers ``query`` prompt, and
            ``ctem-eval`` evaluates with it. Default: the one the loaded folder records.
        trust_remote_code: run Python code a model folder ships (``auto_map``); off, such a
            folder is refused with ``ctem.remote_code.RemoteCodeError``, never a prompt.
        lora: LoRA adapters on the backbone (``ctem.lora.LoraConfig`` fields): only they
            train; ``save_pretrained`` writes the merged weights.
        compile: compile the backbone with ``torch.compile`` (dynamic shapes; weights and
            saved files are unchanged).
        spec: the ``EncoderSpec`` of these same settings, already loaded (its tokenizer is
            used, not loaded again).
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        pooling: Pooling | None = None,
        normalize: bool | None = None,
        query_max_length: int | None = None,
        passage_max_length: int | None = None,
        gradient_checkpointing: bool = False,
        attn_implementation: str | None = "sdpa",
        query_instruction: str | None = None,
        trust_remote_code: bool = False,
        compile: bool = False,
        lora: LoraConfig | dict[str, Any] | None = None,
        spec: EncoderSpec | None = None,
    ) -> None:
        super().__init__()
        _check_one_source(name_or_path, config)
        if spec is None:
            spec = EncoderSpec.load(
                name_or_path, tokenizer, pooling, normalize, query_max_length, passage_max_length, query_instruction, trust_remote_code
            )
        self.trust_remote_code = trust_remote_code
        self.pooling: str = spec.pooling
        self.normalize: bool = spec.normalize
        self.query_max_length: int = spec.query_max_length
        self.passage_max_length: int = spec.passage_max_length
        self.query_instruction: str | None = spec.query_instruction
        # The embedding prefixes a Matryoshka stage trained (recorded on saving), or None.
        self.matryoshka_dims: list[int] | None = spec.matryoshka_dims
        self.tokenizer: PreTrainedTokenizerBase = spec.tokenizer
        tok_source = spec.tokenizer_source
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        if name_or_path is not None:
            with refused_remote_code(name_or_path):
                self.backbone = _load_backbone(name_or_path, kwargs)
        else:
            cfg = dict(config)  # type: ignore[arg-type]
            model_type = cfg.pop("model_type", None)
            if model_type is None:
                raise ValueError("`config` must name a `model_type` (for example `bert`)")
            if cfg.get("vocab_size") is None:
                cfg["vocab_size"] = len(self.tokenizer)
            cfg.setdefault("pad_token_id", self.tokenizer.pad_token_id)
            hf_config = AutoConfig.for_model(model_type, **cfg)
            self.backbone = AutoModel.from_config(hf_config, **kwargs)
        if len(self.tokenizer) > self.backbone.config.vocab_size:
            raise ValueError(
                f"tokenizer {tok_source!r} has {len(self.tokenizer)} tokens but the model's "
                f"vocab_size is {self.backbone.config.vocab_size}"
            )
        limit = position_limit(self.backbone.config)
        if limit is not None and self.tokenizer.model_max_length > limit:
            # tokenizers built from a vocab.txt say 1e30: saved as is, AutoTokenizer would
            # not truncate and AutoModel would fail on texts past the position table.
            self.tokenizer.model_max_length = limit
        # A task head inside the backbone (BERT's `pooler`) is never used by ctem's pooling:
        # freeze it so DDP does not wait for gradients that never come. It is still saved.
        unused = getattr(self.backbone, "pooler", None)
        if isinstance(unused, nn.Module):
            unused.requires_grad_(False)
        self.lora = LoraConfig.from_any(lora)
        self.backbone = self.lora.apply(self.backbone)
        if gradient_checkpointing:
            self.set_gradient_checkpointing(True)
        if compile:
            self.backbone.compile(dynamic=True)
        # transformers' from_pretrained returns the backbone in eval mode (an inference
        # default); a TextEncoder starts in training mode like any nn.Module, so training
        # from a saved or hub model runs with dropout on. encode() switches to eval itself.
        self.train()

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **overrides: Any) -> "TextEncoder":
        """Load a folder written by ``save_pretrained`` (or any HF / sentence-transformers model)."""
        return cls(name_or_path=str(name_or_path), **overrides)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Switch activation recomputation in the backbone on or off."""
        if enabled:
            self.backbone.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        else:
            self.backbone.gradient_checkpointing_disable()

    @property
    def dim(self) -> int:
        """Embedding size H."""
        return int(self.backbone.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        packed: bool = False,
    ) -> torch.Tensor:
        """Token ids ``[B, L]`` -> embeddings ``[B, H]`` (float32 when normalised).

        ``packed``: run only the real tokens, as one packed sequence with variable-length
        attention (``ctem.packing.packed_hidden``; needs ``ctem.packing.packs(backbone)``).
        """
        if packed:
            hidden = packed_hidden(self.backbone, input_ids, attention_mask, token_type_ids)
        else:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                inputs["token_type_ids"] = token_type_ids
            hidden = self.backbone(**inputs).last_hidden_state
        emb = pool(hidden, attention_mask, self.pooling)
        if self.normalize:
            emb = nn.functional.normalize(emb.float(), p=2, dim=-1)
        return emb

    def tokenize(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        """Tokenise with truncation to ``max_length`` and padding to the longest row."""
        return dict(
            self.tokenizer(
                list(texts),
                max_length=max_length,
                truncation=True,
                padding=True,
                return_tensors="pt",
            )
        )

    @torch.no_grad()
    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        instruction: str | None = None,
        max_length: int | None = None,
        is_query: bool = False,
        convert_to_numpy: bool = True,
        show_progress_bar: bool = False,
        device: str | torch.device | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Embed ``texts`` for inference: ``[N, H]`` float32 (numpy, or a CPU tensor).

        No gradients, eval mode (restored afterwards). Texts are processed longest first
        so batches carry little padding; the output keeps the input order. ``instruction``
        is prepended to every text. ``max_length`` defaults to the query or passage limit.
        The ``ctem.encoding.EncoderAdapter`` of evaluation and mining does the work, so
        every path embeds a text the same way (non-finite embeddings raise
        ``ctem.finite.NonFiniteError``).
        """
        if device is not None:
            self.to(device)
        encode = EncoderAdapter(self, batch_size, max_length, cache_tokenization=False, show_progress=show_progress_bar)
        out = encode(texts, instruction, is_query=is_query)
        return out if convert_to_numpy else torch.from_numpy(out)

    # ----------------------------------------------------------------- saving
    def save_pretrained(
        self,
        save_dir: str | os.PathLike,
        backbone_state: dict[str, torch.Tensor] | None = None,
        extra_files: Callable[[Path], Any] | None = None,
    ) -> Path:
        """Write HF weights (safetensors), the tokenizer and sentence-transformers files.

        Result: ``AutoModel.from_pretrained(dir)``, ``SentenceTransformer(dir)`` and
        ``TextEncoder.from_pretrained(dir)`` all load it, and the last two give equal
        embeddings. ``backbone_state`` replaces the backbone's own weights (e.g. the full
        weights gathered from an FSDP-sharded model); ``extra_files(folder)`` adds files of
        its own (a model card, a decoder) before the folder is completed.

        The folder is written as a whole: into a temporary sibling, completed by
        ``ctem_complete.json`` (written last), then put in place of ``save_dir``
        (``ctem.files.staged_folder``); an interrupted save leaves ``save_dir`` as it was.
        """
        with staged_folder(save_dir) as staging:
            self._write_files(staging, backbone_state)
            if extra_files is not None:
                extra_files(staging)
            write_complete_marker(staging)
        return Path(save_dir)

    def _write_files(self, out: Path, backbone_state: dict[str, torch.Tensor] | None) -> None:
        """The model files of :meth:`save_pretrained`, into the folder ``out``."""
        if self.lora.enabled:
            merged_backbone(self.backbone, backbone_state).save_pretrained(out, safe_serialization=True)
        else:
            self.backbone.save_pretrained(out, state_dict=backbone_state, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        settings = {
            "pooling": self.pooling,
            "normalize": self.normalize,
            "query_max_length": self.query_max_length,
            "passage_max_length": self.passage_max_length,
            "query_instruction": self.query_instruction or "",
        }
        if self.matryoshka_dims:
            settings["matryoshka_dims"] = list(self.matryoshka_dims)
        _write_json(out / CTEM_CONFIG_NAME, settings)
        _write_sentence_transformers_files(out, self)


# --------------------------------------------------------------------------- helpers
def position_limit(config: Any) -> int | None:
    """Longest input (tokens) the backbone's position embeddings cover, or ``None``.

    RoBERTa-style models reserve ``padding_idx + 1`` positions of their table."""
    positions = getattr(config, "max_position_embeddings", None)
    if not positions:
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "longformer"):
        positions -= (getattr(config, "pad_token_id", 1) or 1) + 1
    return int(positions)


def _load_backbone(name_or_path: str, kwargs: dict[str, Any]) -> nn.Module:
    check_local_or_hub(name_or_path, "model")
    try:
        return AutoModel.from_pretrained(name_or_path, **kwargs)
    except ValueError as err:  # attention implementation not supported by this architecture
        if "attn_implementation" in kwargs and "attn" in str(err).lower():
            kwargs = {k: v for k, v in kwargs.items() if k != "attn_implementation"}
            return AutoModel.from_pretrained(name_or_path, **kwargs)
        raise


def _check_ctem_folder(source: str) -> None:
    """A folder ctem wrote (it holds ``ctem_config.json`` or ``ctem_complete.json``) must be
    complete: ``ctem.files.IncompleteFolderError`` names the missing file. Other folders
    (plain transformers / sentence-transformers ones) load as they are."""
    root = Path(source)
    if (root / CTEM_CONFIG_NAME).is_file() or (root / COMPLETE_MARKER).is_file():
        check_complete(root)


def _read_saved_settings(name_or_path: str) -> dict[str, Any]:
    """Pooling / normalisation / lengths / query instruction saved by ctem or by
    sentence-transformers (its ``query`` prompt)."""
    root = Path(name_or_path)
    if not root.is_dir():
        return {}
    ctem_file = root / CTEM_CONFIG_NAME
    if ctem_file.is_file():
        return json.loads(ctem_file.read_text(encoding="utf-8"))
    settings: dict[str, Any] = {}
    st_config = root / "config_sentence_transformers.json"
    if st_config.is_file():
        prompts = json.loads(st_config.read_text(encoding="utf-8")).get("prompts") or {}
        if "query" in prompts:
            settings["query_instruction"] = prompts["query"]
    modules_file = root / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        settings["normalize"] = any("Normalize" in m.get("type", "") for m in modules)
        for m in modules:
            if "Pooling" in m.get("type", ""):
                pooling_cfg = json.loads((root / m["path"] / "config.json").read_text("utf-8"))
                settings["pooling"] = _pooling_from_st_config(pooling_cfg)
    return settings


def _pooling_from_st_config(cfg: dict[str, Any]) -> str:
    if "pooling_mode" in cfg:  # sentence-transformers >= 6 layout
        mode = {"lasttoken": "last", "mean_tokens": "mean"}.get(cfg["pooling_mode"], cfg["pooling_mode"])
    else:
        mode = next((name for name, flag in _ST_POOLING_FLAGS.items() if cfg.get(flag)), "")
    if mode not in POOLING_MODES:
        raise ValueError(f"sentence-transformers pooling {cfg} is not supported by ctem")
    return mode


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_sentence_transformers_files(out: Path, encoder: TextEncoder) -> None:
    """The classic sentence-transformers layout, read by its versions 2 to 6."""
    from ctem import __version__

    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if encoder.normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
        (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(out / "modules.json", modules)
    max_len = max(encoder.query_max_length, encoder.passage_max_length)
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": max_len, "do_lower_case": False})
    pooling_cfg = {"word_embedding_dimension": encoder.dim}
    for name, flag in _ST_POOLING_FLAGS.items():
        pooling_cfg[flag] = encoder.pooling == name
    pooling_cfg.update(
        pooling_mode_max_tokens=False,
        pooling_mode_mean_sqrt_len_tokens=False,
        pooling_mode_weightedmean_tokens=False,
        include_prompt=True,
    )
    (out / "1_Pooling").mkdir(exist_ok=True)
    _write_json(out / "1_Pooling" / "config.json", pooling_cfg)
    _write_json(
        out / "config_sentence_transformers.json",
        {
            "__version__": {"ctem": __version__, "pytorch": torch.__version__},
            "prompts": {"query": encoder.query_instruction or "", "document": ""},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine" if encoder.normalize else "dot",
        },
    )
