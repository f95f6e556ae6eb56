#!/usr/bin/env bash
# The C-Pack recipe end to end: RetroMAE pre-training -> contrastive learning -> hard-negative
# mining -> instruction fine-tuning -> C-MTEB evaluation, each stage starting from the
# previous stage's final_model/.
#
#   scripts/cpack_pipeline.sh [RUN_DIR] [overrides for every training stage ...]
#
#   RUN_DIR    folder of the chain (default logs/cpack/<date>_<time>); training stage S runs
#              in RUN_DIR/S (hydra.run.dir) and leaves its encoder in RUN_DIR/S/final_model;
#              `mine` writes RUN_DIR/mine/<file>.jsonl, `eval` writes RUN_DIR/eval/.
#   overrides  Hydra overrides given to every training stage, e.g. trainer=gpu logger=csv.
#
# Environment:
#   STAGES             stages in order (default "pretrain contrastive mine finetune eval").
#                      pretrain / contrastive / finetune train with conf/experiment/cpack/[PRESET/]<stage>.yaml;
#                      mine mines hard negatives for every labeled file with the previous model
#                      (finetune then trains on them); eval runs ctem-eval on the last model.
#   PRESET             a folder of conf/experiment/cpack/ holding the three stages with other
#                      sizes, e.g. PRESET=cpu (the whole recipe from scratch on 2 CPU cores,
#                      docs/reproduction.md). Default: none (conf/experiment/cpack/<stage>.yaml).
#   LANG               the recipe's language: zh (default) or en (C-Pack Appendix C: the same
#                      recipe on English data). It becomes `lang=...` of every stage (conf/lang/:
#                      data folders, vocabulary, retrieval instruction, dev suite) and picks
#                      LABELED's default. Only the bare codes count: a locale such as
#                      en_US.UTF-8 or C.UTF-8 leaves the default (zh), and with a bare code the
#                      stages run with LANG=C.UTF-8.
#   START_MODEL        encoder the first stage starts from (hub id or folder). Default: none,
#                      i.e. pre-training builds a new model; required when the first stage is
#                      not pretrain. With pretrain it continues pre-training that checkpoint.
#   SEED               seed of every stage and of mining (default 42).
#   LABELED            labeled training files to mine and fine-tune on
#                      (default ${CTEM_SHARED_DATA:-../shared/data}/train/labeled, with LANG=en
#                      ${CTEM_SHARED_DATA:-../shared/data}/en/train/labeled).
#   MINE_ARGS / EVAL_ARGS / PRETRAIN_ARGS / CONTRASTIVE_ARGS / FINETUNE_ARGS
#                      extra overrides of one stage (space separated), e.g.
#                      PRETRAIN_ARGS="model=bert_base trainer.max_steps=50000"
#   PYTHON             interpreter (default: python)
#
# A stage that has finished (its final_model/ is complete, i.e. holds ctem_complete.json;
# the mined files or the evaluation summary exist) is skipped, so re-running the same RUN_DIR
# after an interruption resumes the chain at the unfinished stage; an interrupted training
# stage continues from the newer of its checkpoints/interrupted.ckpt (SIGTERM, Ctrl-C) and
# checkpoints/last.ckpt (ckpt_path=...). Each stage's wall time is appended to RUN_DIR/times.tsv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${1:-logs/cpack/$(date +%Y-%m-%d_%H-%M-%S)}"
shift $(( $# > 0 ? 1 : 0 ))
STAGES="${STAGES:-pretrain contrastive mine finetune eval}"
PYTHON="${PYTHON:-python}"
SEED="${SEED:-42}"
case "${LANG:-}" in
  zh|en) RECIPE_LANG="$LANG"; export LANG=C.UTF-8 ;;  # a recipe language, not a locale
  *) RECIPE_LANG=zh ;;
esac
DATA="${CTEM_SHARED_DATA:-../shared/data}"
if [[ "$RECIPE_LANG" == en ]]; then DATA="$DATA/en"; fi
LABELED="${LABELED:-$DATA/train/labeled}"
EXPERIMENTS="cpack${PRESET:+/$PRESET}"
previous="${START_MODEL:-}"
mined=""
mkdir -p "$RUN_DIR"

timed() {  # timed STAGE COMMAND...: run COMMAND, append "STAGE<TAB>seconds" to times.tsv
  local stage="$1" start
  shift
  start=$(date +%s)
  "$@"
  printf '%s\t%s\n' "$stage" "$(( $(date +%s) - start ))" >> "$RUN_DIR/times.tsv"
}

for stage in $STAGES; do
  stage_dir="$RUN_DIR/$stage"
  upper="$(echo "$stage" | tr '[:lower:]' '[:upper:]')_ARGS"
  read -r -a stage_args <<< "${!upper:-}"
  case "$stage" in
    mine)
      if [[ -z "$previous" ]]; then
        echo "cpack_pipeline: mine needs a model: run a training stage first or set START_MODEL" >&2
        exit 2
      fi
      if [[ -f "$stage_dir/.done" ]]; then
        echo "cpack_pipeline: mine already done ($stage_dir), skipping"
      else
        echo "cpack_pipeline: mine -> $stage_dir"
        mkdir -p "$stage_dir"
        mine_all() {
          local file
          for file in "$LABELED"/*.jsonl; do
            "$PYTHON" -m ctem.cli.mine model_path="$previous" input="$file" output="$stage_dir/$(basename "$file")" \
              mining.seed="$SEED" hydra.run.dir="$stage_dir/logs/$(basename "$file" .jsonl)" "${stage_args[@]}"
          done
        }
        timed mine mine_all
        touch "$stage_dir/.done"
      fi
      mined="$stage_dir"
      continue
      ;;
    eval)
      if [[ -z "$previous" ]]; then
        echo "cpack_pipeline: eval needs a model: run a training stage first or set START_MODEL" >&2
        exit 2
      fi
      if [[ -f "$stage_dir/summary.csv" ]]; then
        echo "cpack_pipeline: eval already done ($stage_dir), skipping"
      else
        echo "cpack_pipeline: eval -> $stage_dir"
        timed eval "$PYTHON" -m ctem.cli.eval model_path="$previous" output_dir="$stage_dir" progress=false \
          lang="$RECIPE_LANG" hydra.run.dir="$stage_dir/logs" "${stage_args[@]}"
      fi
      continue
      ;;
  esac
  if [[ ! -f "$ROOT/conf/experiment/$EXPERIMENTS/$stage.yaml" ]]; then
    echo "cpack_pipeline: unknown stage '$stage' (no conf/experiment/$EXPERIMENTS/$stage.yaml)" >&2
    exit 2
  fi
  args=("experiment=$EXPERIMENTS/$stage" "lang=$RECIPE_LANG" "hydra.run.dir=$stage_dir" "seed=$SEED")
  if [[ -n "$previous" ]]; then
    args+=("model=hf" "model.name_or_path=$previous")
  elif [[ "$stage" != "pretrain" ]]; then
    echo "cpack_pipeline: stage '$stage' needs a model to start from: set START_MODEL" >&2
    exit 2
  fi
  if [[ "$stage" == "finetune" && -n "$mined" ]]; then
    args+=("data.datasets=$mined")
  fi
  if [[ -f "$stage_dir/final_model/ctem_complete.json" ]]; then
    echo "cpack_pipeline: $stage already done ($stage_dir/final_model), skipping"
  else
    resume=""  # an interrupted stage continues from its newest checkpoint instead of restarting
    for ckpt in "$stage_dir/checkpoints/interrupted.ckpt" "$stage_dir/checkpoints/last.ckpt"; do
      if [[ -f "$ckpt" && ( -z "$resume" || "$ckpt" -nt "$resume" ) ]]; then resume="$ckpt"; fi
    done
    if [[ -n "$resume" ]]; then
      args+=("ckpt_path=$resume")
      echo "cpack_pipeline: $stage -> $stage_dir (resuming from $resume)"
    else
      echo "cpack_pipeline: $stage -> $stage_dir"
    fi
    timed "$stage" "$PYTHON" "$ROOT/train.py" "${args[@]}" "$@" "${stage_args[@]}"
  fi
  previous="$stage_dir/final_model"
done
echo "cpack_pipeline: final encoder in $previous"
