#!/usr/bin/env bash
# One prepared GPU check of ctem (one H100/H200, about 8 minutes), printing one table:
#   1. bf16 training throughput, equal batch: ctem vs sentence-transformers MNRL vs
#      FlagEmbedding, on a random MiniLM-size and a random BERT-base-size model
#   2. the largest batch the base model trains at with ctem's gradient cache (19,200 first)
#   3. a 1-GPU FSDP smoke run (python train.py trainer=fsdp trainer.devices=1, 2 steps)
#   4. faiss-gpu mining search against the CPU, if faiss-gpu imports
# Each part runs under its own timeout (seconds: TIME_THROUGHPUT, TIME_BIG_BATCH, TIME_FSDP,
# TIME_FAISS), so one failure does not eat the budget. The table goes to stdout and, when
# $OUT is set, to $OUT/gpu_check.md. Without a CUDA GPU it prints one line and exits 0.
#
# The GPU machine has no network and lacks some of ctem's dependencies (datasets, hydra):
# fetch their wheels here first (into .whl/, git-ignored), then carry .whl along:
#   bash bench/gpu_check.sh --fetch-wheels
#   bash bench/gpu_check.sh                       # on the GPU machine, with .whl carried
# (faiss-gpu's wheel, 135 MB, is over what a call carries: part 4 then says it is missing.)
# GPU_CHECK_DEVICE=cpu runs every part at toy sizes on the CPU (a test of this script).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    mkdir -p .whl
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 hydra-core==1.3.8 omegaconf==2.3.1 || exit 1
    "$PY" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3 || exit 1
    du -sh .whl
    exit 0
fi

if [[ "$DEVICE" == cuda ]] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    echo "gpu_check: no CUDA GPU visible to $PY (torch.cuda.is_available() is not true); nothing run"
    exit 0
fi

TABLE="$(mktemp)"
LOG="$(mktemp)"
START=$SECONDS
{
    echo "| check | setting | result |"
    echo "|---|---|---|"
} >"$TABLE"

# ctem (and the missing packages) into folders of their own, without touching torch.
if [[ "$DEVICE" == cuda ]]; then
    SITE="$(mktemp -d)"
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE/deps" .whl/*.whl >>"$LOG" 2>&1
    fi
    "$PY" -m pip install -q --no-deps --no-build-isolation --no-compile --target "$SITE/ctem" . >>"$LOG" 2>&1
    export PYTHONPATH="$SITE/ctem:$SITE/deps${PYTHONPATH:+:$PYTHONPATH}"
    if ! "$PY" -c 'import ctem.modules, ctem.data_modules, hydra' >>"$LOG" 2>&1; then
        echo "| setup | pip install of ctem and .whl | failed: $(tail -n 1 "$LOG" | cut -c1-200) |" >>"$TABLE"
    fi
fi
echo "| setup | $("$PY" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")' 2>&1 | tail -n 1) | $((SECONDS - START)) s |" >>"$TABLE"

# part NAME SECONDS ARGS...: run one part of bench/gpu_check.py under a timeout, add its rows.
part() {
    local name="$1" limit="$2" started=$SECONDS status
    shift 2
    timeout --kill-after=15 "$limit" "$PY" bench/gpu_check.py "$@" --device "$DEVICE" >"$LOG" 2>&1
    status=$?
    grep -P '^ROW\t' "$LOG" | cut -f2- | sed 's/\t/ | /g; s/^/| /; s/$/ |/' >>"$TABLE"
    if [[ $status -eq 124 || $status -eq 137 ]]; then
        echo "| $name | | timed out after $limit s |" >>"$TABLE"
    elif [[ $status -ne 0 ]]; then
        echo "| $name | | failed (exit $status): $(grep -v '^ROW' "$LOG" | tail -n 1 | cut -c1-200) |" >>"$TABLE"
    fi
    echo "[gpu_check] $name: $((SECONDS - started)) s (exit $status)" >&2
}

part "throughput minilm" "${TIME_THROUGHPUT:-100}" throughput --size minilm
part "throughput base" "${TIME_THROUGHPUT:-100}" throughput --size base
part "largest cached batch" "${TIME_BIG_BATCH:-150}" big-batch --size base --budget-s "$(( ${TIME_BIG_BATCH:-150} - 10 ))"
part "FSDP smoke" "${TIME_FSDP:-60}" fsdp
part "faiss-gpu mining" "${TIME_FAISS:-40}" faiss
echo "| total | | $((SECONDS - START)) s |" >>"$TABLE"

cat "$TABLE"
if [[ -n "${OUT:-}" ]]; then
    cp "$TABLE" "$OUT/gpu_check.md"
fi
rm -f "$TABLE" "$LOG"
