"""Speed and memory of a RetroMAE training step: ctem's MLM loss against the previous ctem
formulation and the original full-vocabulary one, at equal batch, masks and weights.

``RetroMAEModule`` computes the MLM head only at the positions that carry a label, and fuses
the head's vocabulary projection with the cross-entropy and the accuracy
(``ctem.retromae.fused_loss.fused_linear_cross_entropy``: chunks of rows, gradients formed in
forward, no ``[N, V]`` logits kept). Before it (issue 14) ``_masked_lm_loss`` formed the
logits ``[N, V]`` of the labelled rows (``head(hidden[labels != -100])``), then
``F.cross_entropy`` and an argmax for the accuracy. The original RetroMAE code
(``BertForMaskedLM`` for the encoder, ``self.lm.cls(hiddens)`` for the decoder, as
FlagEmbedding's RetroMAE pre-training) computes logits ``[B, L, V]`` at every position and
then ``CrossEntropyLoss`` with ``ignore_index=-100``. All give the same losses and gradients
(tests/test_bench_retromae_losses.py checks it to 1e-5); this script measures what the
difference costs.

Implementations (``--impls``; each run in its own subprocess, repeats round-robin):
  ctem             ``RetroMAEModule.forward`` as it is (fused loss, ``--loss-chunk`` rows
                   per chunk; default the module's)
  gathered-logits  the previous ctem step: the same module, weights, batches and masks;
                   encoder and decoder hidden states from ctem's code, then the head's
                   logits ``[N, V]`` at the labelled positions, cross-entropy and argmax
                   accuracy (``gathered_logits_losses``)
  full-logits      the same, but full ``[B, L, V]`` logits and cross-entropy with
                   ``ignore_index=-100`` (the original formulation, ``full_logits_losses``)

Every step: forward, backward and an AdamW step, in train mode (dropout on), after the
batches were collated (masks drawn) beforehand with one seeded generator, so every
implementation trains the same weights (one seed) on the same masked rows. Measured:
tokens/s = real encoder tokens of the timed steps / their wall time (after ``--warmup``
steps); peak memory on CPU = the peak RSS the steps add over the RSS after the model and
batches were built (kernel high-water mark ``VmHWM``, reset through
``/proc/self/clear_refs``; tracemalloc does not see torch's allocations); on CUDA
``torch.cuda.max_memory_allocated`` (weights included). The speed ratio is the median of
per-repeat ratios.

    python bench/retromae_speed.py                                   # bert_small, 32 x 256 (experiment=cpack/pretrain)
    python bench/retromae_speed.py --model bert_cpu --batch-size 8 --max-length 128 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, MemoryProbe, StepTimer, command_line, emit_result, median, run_worker  # noqa: E402

IMPLS = ("ctem", "gathered-logits", "full-logits")
SHARED_DATA = REPO / ".." / "shared" / "data"
DEFAULT_CORPUS = SHARED_DATA / "train" / "pretrain" / "corpus.jsonl"
QUICKSTART_DIR = REPO / "src" / "ctem" / "assets" / "quickstart"


# =========================================================================== the losses
def decoder_hidden_states(module: Any, hidden: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """The enhanced decoder's output ``[B, L, H]``, built as ``RetroMAEModule.decoder_loss``
    builds it: query stream from [CLS], keys and values [CLS] + the clean text."""
    input_ids = batch["decoder_input_ids"]
    cls = hidden[:, :1]
    query = module.embeddings(inputs_embeds=cls.expand(-1, input_ids.size(1), -1))
    key_value = torch.cat([cls, module.embeddings(input_ids=input_ids)[:, 1:]], dim=1)
    return module.decoder(query, key_value.to(query.dtype), batch["decoder_attention_mask"])


def full_logits_losses(module: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, encoder_loss, decoder_loss)`` of ``module`` (a ``RetroMAEModule``) the way the
    original RetroMAE computes them: logits ``[B, L, V]`` at every position of the encoder and
    of the decoder, then ``F.cross_entropy(..., ignore_index=-100)``. The hidden states are
    ctem's (same encoder call, same decoder inputs)."""
    head, weights = module.mlm_head, module.word_embeddings
    hidden = module.encoder_hidden_states(batch)
    losses = []
    for states, labels in ((hidden, batch["encoder_labels"]), (decoder_hidden_states(module, hidden, batch), batch["decoder_labels"])):
        logits = head(states, weights)
        losses.append(F.cross_entropy(logits.view(-1, logits.size(-1)).float(), labels.view(-1), ignore_index=-100))
    return losses[0] + losses[1], losses[0], losses[1]


def gathered_logits_losses(module: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, encoder_loss, decoder_loss)`` the way ``RetroMAEModule`` computed them before
    the fused loss: logits ``[N, V]`` of the head at the ``N`` labelled positions only, then
    ``F.cross_entropy`` and the top-1 accuracy by ``argmax`` (computed, as it was logged)."""
    head, weights = module.mlm_head, module.word_embeddings
    hidden = module.encoder_hidden_states(batch)
    losses = []
    for states, labels in ((hidden, batch["encoder_labels"]), (decoder_hidden_states(module, hidden, batch), batch["decoder_labels"])):
        targets = labels != -100
        logits = head(states[targets], weights).float()
        gold = labels[targets]
        losses.append(F.cross_entropy(logits, gold))
        (logits.argmax(dim=-1) == gold).float().mean().detach()
    return losses[0] + losses[1], losses[0], losses[1]


def ctem_losses(module: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    out = module(batch)
    return out.loss, out.encoder_loss, out.decoder_loss


# =========================================================================== worker
def build_module(model: str, tokenizer: str | None, seed: int) -> tuple[Any, Any]:
    """A ``RetroMAEModule`` around the encoder of ``conf/model/<model>.yaml`` (random weights
    from ``seed``) and the data config, composed as ``experiment=cpack/pretrain model=<model>``."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from ctem.config import config_dir, register_resolvers
    from ctem.modules import RetroMAEModule

    register_resolvers()
    overrides = ["experiment=cpack/pretrain", f"model={model}"] + ([f"model.tokenizer={tokenizer}"] if tokenizer else [])
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    torch.manual_seed(seed)
    return RetroMAEModule(instantiate(cfg.model), reuse_pretrained_mlm_head=False), cfg.data


def corpus_texts(path: Path, limit_chars: int) -> list[str]:
    """Texts from the start of a ``{"text"}`` JSON-lines corpus, about ``limit_chars`` in all
    (the quickstart sample's queries and passages when ``path`` is missing)."""
    if not path.is_file():
        print(f"[bench] {path} missing; using the quickstart sample's texts", flush=True)
        rows = [json.loads(line) for line in (QUICKSTART_DIR / "train.jsonl").open(encoding="utf-8")]
        texts = [t for r in rows for t in (r["query"], *r["pos"])]
        return texts * (limit_chars // max(sum(map(len, texts)), 1) + 1)
    texts, total = [], 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            total += len(texts[-1])
            if total >= limit_chars:
                break
    return texts


def make_batches(tokenizer: Any, data: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """``warmup + steps`` RetroMAE batches of ``batch_size`` full packed rows of
    ``max_length`` tokens, masks drawn as the data config ``data`` says, from a seeded generator."""
    from ctem.data_modules.corpus import CorpusTokenizer, RetroMAECollator

    count = (args.warmup + args.steps) * args.batch_size
    texts = corpus_texts(Path(args.corpus), 2 * count * args.max_length)
    rows = CorpusTokenizer(tokenizer, args.max_length, packing=True, segmentation=None)({"text": texts})
    full = [{"input_ids": i, "word_ids": w} for i, w in zip(rows["input_ids"], rows["word_ids"]) if len(i) == args.max_length - 2]
    if len(full) < count:
        raise SystemExit(f"{args.corpus}: only {len(full)} packed rows of {args.max_length} tokens, {count} needed")
    collate = RetroMAECollator(
        tokenizer,
        encoder_mask_ratio=data.encoder_mask_ratio,
        decoder_mask_ratio=data.decoder_mask_ratio,
        decoder_mask_pool_size=data.decoder_mask_pool_size,
        mask_token_prob=data.mask_token_prob,
        random_token_prob=data.random_token_prob,
        generator=torch.Generator().manual_seed(args.seed),
    )
    return [collate(full[i : i + args.batch_size]) for i in range(0, count, args.batch_size)]


def _to(batch: Any, device: str) -> Any:
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch.to(device)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Train ``warmup + steps`` steps with one implementation; tokens/s, peak memory, losses."""
    torch.set_num_threads(args.threads)
    module, data = build_module(args.model, args.tokenizer, args.seed)
    module.loss_chunk_size = args.loss_chunk
    module = module.to(args.device)
    batches = [_to(b, args.device) for b in make_batches(module.encoder.tokenizer, data, args)]
    losses: dict[str, Callable[[Any, dict], tuple]] = {
        "ctem": ctem_losses,
        "gathered-logits": gathered_logits_losses,
        "full-logits": full_logits_losses,
    }
    step_losses = losses[args.worker]
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    module.train()
    torch.manual_seed(args.seed + 1)  # dropout masks: the same sequence for every implementation
    timer, memory = StepTimer(args.warmup, args.device), MemoryProbe(args.device)
    first: list[float] = []
    memory.start()
    timer.start()
    for batch in batches:
        with torch.autocast(device_type=args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss, encoder_loss, decoder_loss = step_losses(module, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timer.mark()
        first = first or [float(encoder_loss), float(decoder_loss)]
    tokens = sum(int(b["encoder"]["attention_mask"].sum()) for b in batches[args.warmup :])
    return {
        "impl": args.worker,
        "tokens_per_s": tokens / timer.timed_seconds(),
        "peak_mb": memory.peak_mb(),
        "first_step_losses": first,
        "vocab_size": int(module.word_embeddings.size(0)),
        "labelled": [int((batches[0][k] != -100).sum()) for k in ("encoder_labels", "decoder_labels")],
        "torch": torch.__version__,
    }


# =========================================================================== parent
def worker_args(args: argparse.Namespace, impl: str) -> list[str]:
    return [
        "--worker", impl, "--model", args.model, "--batch-size", str(args.batch_size),
        "--max-length", str(args.max_length), "--warmup", str(args.warmup), "--steps", str(args.steps),
        "--threads", str(args.threads), "--device", args.device, "--precision", args.precision,
        "--seed", str(args.seed), "--corpus", str(args.corpus),
    ] + (["--tokenizer", args.tokenizer] if args.tokenizer else []) + (["--loss-chunk", str(args.loss_chunk)] if args.loss_chunk else [])  # fmt: skip


def format_table(args: argparse.Namespace, runs: dict[str, list[dict]], errors: dict[str, str]) -> str:
    """One row per peer: ctem's and the peer's median tokens/s and peak MB, the ratios."""
    settings = f"{args.model}, {args.batch_size} x {args.max_length}, {args.device} {args.precision}, {args.threads} thr"
    lines = [
        "| settings | peer | ctem tokens/s | peer tokens/s | ctem / peer speed: median (per repeat) "
        "| ctem peak MB | peer peak MB | ctem / peer memory: median (per repeat) | step-1 losses (enc, dec): ctem / peer |",
        "|" + "---|" * 9,
    ]
    ours = runs.get("ctem", [])
    for impl in (i for i in args.impls if i != "ctem"):
        if impl in errors or "ctem" in errors:
            lines.append(f"| {settings} | {impl} | not run: {errors.get(impl) or errors.get('ctem')} |" + " |" * 6)
            continue
        theirs = runs[impl]
        speed = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(ours, theirs)]
        memory = [a["peak_mb"] / b["peak_mb"] for a, b in zip(ours, theirs) if b["peak_mb"] > 0]
        loss_a, loss_b = ours[0]["first_step_losses"], theirs[0]["first_step_losses"]
        lines.append(
            f"| {settings} | {impl} | {median([r['tokens_per_s'] for r in ours]):.0f} | {median([r['tokens_per_s'] for r in theirs]):.0f} "
            f"| {median(speed):.2f} ({', '.join(f'{r:.2f}' for r in speed)}) "
            f"| {median([r['peak_mb'] for r in ours]):.0f} | {median([r['peak_mb'] for r in theirs]):.0f} "
            f"| {median(memory) if memory else float('nan'):.2f} ({', '.join(f'{r:.2f}' for r in memory)}) "
            f"| {loss_a[0]:.4f}, {loss_a[1]:.4f} / {loss_b[0]:.4f}, {loss_b[1]:.4f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="bert_small", help="a conf/model name (bert_small, bert_cpu, bert_base, ...); random weights")
    parser.add_argument("--tokenizer", default=None, help="tokenizer (default: experiment=cpack/pretrain's bert-base-chinese vocab.txt)")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per step (cpack/pretrain: 32)")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per packed row, [CLS] and [SEP] included (cpack/pretrain: 256)")
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="{\"text\"} JSON lines to pack into rows")
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS), help="implementations (ctem always runs)")
    parser.add_argument("--loss-chunk", type=int, default=None, help="ctem's fused loss: rows of logits per chunk (default: the module's, ~128 MiB)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per implementation, round-robin; medians reported")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads per run")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="limit of one run")
    parser.add_argument("--json", default=None, help="also write every run's figures to this file")
    args = parser.parse_args(argv)
    if args.worker:
        emit_result(worker(args))
        return
    args.impls = ["ctem", *[i for i in args.impls if i != "ctem"]]
    runs: dict[str, list[dict]] = {impl: [] for impl in args.impls}
    errors: dict[str, str] = {}
    for repeat in range(args.repeats):
        for impl in (i for i in args.impls if i not in errors):
            run = run_worker(sys.executable, Path(__file__), worker_args(args, impl), args.threads, args.timeout_s)
            if run.result is None:
                errors[impl] = run.error or "failed"
                print(f"[bench] {impl}: not run: {run.error}\n" + "\n".join(run.log_tail), flush=True)
                continue
            runs[impl].append(run.result)
            print(f"[bench] repeat {repeat + 1}/{args.repeats} {impl}: {run.result['tokens_per_s']:.0f} tokens/s, peak {run.result['peak_mb']:.0f} MB", flush=True)
    command = command_line("retromae_speed.py", argv)
    print(f"\nCommand: `{command}`")
    if runs["ctem"]:
        r = runs["ctem"][0]
        print(
            f"Vocabulary {r['vocab_size']}; labelled positions in step 1: encoder {r['labelled'][0]}, decoder {r['labelled'][1]} "
            f"of {args.batch_size * args.max_length}; {args.warmup} warm-up + {args.steps} timed steps, {args.repeats} repeats; "
            f"peak = {'peak RSS added by the steps' if args.device == 'cpu' else 'torch.cuda.max_memory_allocated'}; torch {r['torch']}\n"
        )
    print(format_table(args, runs, errors))
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "runs": runs, "errors": errors}, indent=2))


if __name__ == "__main__":
    main()
