#!/usr/bin/env bash
# CI job: build ctem's wheel, install it in a new virtual environment outside the checkout,
# and run every console script's --help plus a 5-step training of the packaged quickstart
# from an empty folder. Run it with the CI environment active: the new environment holds
# only the wheel and sees the CI environment's dependencies through a .pth file, so nothing
# of the checkout (editable install, conf/, data_modules/) can be picked up.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python -m pip wheel -q --no-deps -w "$WORK/dist" .
python -m venv "$WORK/venv"
deps="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
new="$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$deps" > "$new/_ci_dependencies.pth"
"$WORK/venv/bin/python" -m pip install -q --no-deps "$WORK"/dist/ctem-*.whl
mkdir "$WORK/empty" && cd "$WORK/empty"
export PATH="$WORK/venv/bin:$PATH" HF_HUB_OFFLINE=1 WANDB_MODE=offline
python -c 'import ctem, ctem.data_modules, ctem.callbacks; print("[wheel] ctem from", ctem.__file__)'
for cmd in ctem-train ctem-eval ctem-mine ctem-curate ctem-build-vocab; do
  "$cmd" --help > /dev/null
  echo "[wheel] $cmd --help: ok"
done
ctem-train trainer.max_steps=5 logger=none hydra.run.dir=run
test -f run/final_model/model.safetensors
echo "[wheel] packaged quickstart trained 5 steps: run/final_model written"
