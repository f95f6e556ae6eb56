"""``ctem-mine``: mine hard negatives for a JSON-lines training file with a trained model.

``ctem-mine model_path=DIR input=FILE output=FILE [candidate_pool=FILE] [mining.range=[2,200]]
[mining.negative_number=15] [mining.seed=0] [mining.use_gpu=auto]``; see ``conf/mine.yaml``,
``conf/mining/default.yaml`` and ``docs/mining.md``.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ctem.cli import input_errors_as_messages, refuse_moved_overrides, signals_as_messages
from ctem.config import config_dir, register_resolvers
from ctem.distributed import launched_ranks
from ctem.encoder import TextEncoder
from ctem.encoding import EncoderAdapter
from ctem.files import check_writable_folder
from ctem.mining import EmbeddingCache, MiningConfig, MiningResult, check_mining_paths, mine_jsonl, model_fingerprint

log = logging.getLogger("ctem.mine")


def _plain(value: Any) -> Any:
    """Lists / dicts of a Hydra config as Python objects (scalars unchanged)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def run(cfg: DictConfig) -> MiningResult:
    """Load the model, mine ``cfg.input`` and write ``cfg.output``.

    Started by ``torchrun --nproc_per_node N -m ctem.cli.mine ...``, the N ranks each encode
    a share of the texts (``EncoderAdapter``: length-sorted, round-robin, gathered back in
    order), each searches and samples for every N-th row (the negatives gathered back in
    row order), and rank 0 alone writes the output: the result equals one process's.
    """
    config: MiningConfig = instantiate(cfg.mining)
    check_mining_paths(_plain(cfg.input), cfg.output, _plain(cfg.candidate_pool))  # before the model loads
    if cfg.cache_dir:
        check_writable_folder(cfg.cache_dir, "cache_dir")
    with launched_ranks() as ranks:
        device = ranks.device or cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        overrides = {k: cfg[k] for k in ("query_max_length", "passage_max_length") if cfg[k] is not None}
        encoder = TextEncoder.from_pretrained(cfg.model_path, trust_remote_code=cfg.trust_remote_code, **overrides).to(device)
        encode = EncoderAdapter(encoder, config.batch_size, cache_tokenization=False, rank=ranks.rank, world_size=ranks.world,
                                show_progress=config.show_progress and ranks.rank == 0)
        cache = None
        if cfg.cache_dir:  # every rank reads the same entries, so all call the collective encode alike
            key = f"{model_fingerprint(cfg.model_path)}|q{encoder.query_max_length}|p{encoder.passage_max_length}"
            cache = EmbeddingCache(cfg.cache_dir, key)
        result = mine_jsonl(
            encode,
            _plain(cfg.input),
            cfg.output,
            config,
            candidate_pool_files=_plain(cfg.candidate_pool),
            cache=cache,
            on_bad_row=cfg.on_bad_row,
            pool_scope=cfg.pool_scope,
            write=ranks.rank == 0,
            ranks=(ranks.rank, ranks.world),
        )
        if ranks.rank == 0:
            print(f"[ctem-mine] {result.summary(config.negative_number)}", flush=True)
            print(f"[ctem-mine] written to {cfg.output}" + (f" (encoded by {ranks.world} ranks)" if ranks.world > 1 else ""), flush=True)
    return result


register_resolvers()


@refuse_moved_overrides("ctem-mine")
@hydra.main(version_base="1.3", config_path=config_dir(), config_name="mine")
def main(cfg: DictConfig) -> None:
    with input_errors_as_messages("ctem-mine"), signals_as_messages("ctem-mine", interrupted_note(cfg)):
        run(cfg)


def interrupted_note(cfg: DictConfig) -> str:
    """What a stopped run keeps: no output; the embeddings finished so far, when cached."""
    cached = f" (embeddings finished so far stay cached in {cfg.cache_dir})" if cfg.cache_dir else ""
    return f"{cfg.output} not written{cached}: run the command again"


if __name__ == "__main__":
    main()
