#!/usr/bin/env bash
# The C-Pack recipe end to end: RetroMAE pre-training -> contrastive learning -> instruction
# fine-tuning, each stage starting from the previous stage's final_model/.
#
#   scripts/cpack_pipeline.sh [RUN_DIR] [overrides for every stage ...]
#
#   RUN_DIR    folder of the chain (default logs/cpack/<date>_<time>); stage S runs in
#              RUN_DIR/S (hydra.run.dir) and leaves its encoder in RUN_DIR/S/final_model.
#   overrides  Hydra overrides given to every stage, e.g. trainer=gpu logger=csv.
#
# Environment:
#   STAGES             stages in order (default "pretrain contrastive finetune"); each is
#                      conf/experiment/cpack/<stage>.yaml
#   START_MODEL        encoder the first stage starts from (hub id or folder). Default: none,
#                      i.e. pre-training builds a new model (model=bert_small); required when
#                      the first stage is not pretrain. With pretrain it continues
#                      pre-training that checkpoint (e.g. START_MODEL=bert-base-chinese).
#   PRETRAIN_ARGS / CONTRASTIVE_ARGS / FINETUNE_ARGS
#                      extra overrides of one stage (space separated), e.g.
#                      PRETRAIN_ARGS="model=bert_base trainer.max_steps=50000"
#   PYTHON             interpreter (default: python)
#
# A stage whose final_model/ already exists is skipped, so re-running the same RUN_DIR after
# an interruption resumes the chain at the unfinished stage.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${1:-logs/cpack/$(date +%Y-%m-%d_%H-%M-%S)}"
shift $(( $# > 0 ? 1 : 0 ))
STAGES="${STAGES:-pretrain contrastive finetune}"
PYTHON="${PYTHON:-python}"
previous="${START_MODEL:-}"

for stage in $STAGES; do
  if [[ ! -f "$ROOT/conf/experiment/cpack/$stage.yaml" ]]; then
    echo "cpack_pipeline: unknown stage '$stage' (no conf/experiment/cpack/$stage.yaml)" >&2
    exit 2
  fi
  stage_dir="$RUN_DIR/$stage"
  upper="$(echo "$stage" | tr '[:lower:]' '[:upper:]')_ARGS"
  read -r -a stage_args <<< "${!upper:-}"
  args=("experiment=cpack/$stage" "hydra.run.dir=$stage_dir")
  if [[ -n "$previous" ]]; then
    args+=("model=hf" "model.name_or_path=$previous")
  elif [[ "$stage" != "pretrain" ]]; then
    echo "cpack_pipeline: stage '$stage' needs a model to start from: set START_MODEL" >&2
    exit 2
  fi
  if [[ -f "$stage_dir/final_model/config.json" ]]; then
    echo "cpack_pipeline: $stage already done ($stage_dir/final_model), skipping"
  else
    echo "cpack_pipeline: $stage -> $stage_dir"
    "$PYTHON" "$ROOT/train.py" "${args[@]}" "$@" "${stage_args[@]}"
  fi
  previous="$stage_dir/final_model"
done
echo "cpack_pipeline: final encoder in $previous"
