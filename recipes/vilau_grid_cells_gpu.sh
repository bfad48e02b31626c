#!/usr/bin/env bash
# A fixed-time GPU run that tests grid-cell embeddings on VILA-U's image tokens: continue the
# embedded vila-u-shapes twice side by side with the same recipe and budget, once as it is (raster order,
# 1D RoPE only: the control) and once with --add-grid-position. The caller evaluates both folders on
# held-out data (genfoundry eval vilau) and on validation prompts, and keeps the better one.
# usage: recipes/vilau_grid_cells_gpu.sh OUT_DIR [SECONDS] [WORKERS_PER_JOB]   (SECONDS: 420, WORKERS: 7)
# SMOKE=1 runs the same commands on the CPU for a few seconds (a check of the script).
# OUT_DIR gets vilau-raster/, vilau-grid/ (model/, log.jsonl, summary.json), logs and results.tar.part-*
# (no checkpoints, no frozen vision tower: it is the embedded model's; reassemble with cat).
set -uo pipefail
out="${1:?usage: recipes/vilau_grid_cells_gpu.sh OUT_DIR [SECONDS] [WORKERS_PER_JOB]}"
budget="${2:-420}" workers="${3:-7}"
py="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
start=$(date +%s)
. "$(dirname "$0")/gpu_jobs.sh"
device=cuda
if [ "${SMOKE:-0}" = 1 ]; then
  device=cpu workers=0
fi
(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv) >"$out/gpu.txt" 2>&1
init=genfoundry/zoo/vila-u-shapes
vilau_job $init 5e-4 50 "$budget" "$workers" vilau-raster &
vilau_job $init 5e-4 50 "$budget" "$workers" vilau-grid --add-grid-position &
wait
pack vilau-raster/model vilau-raster/log.jsonl vilau-raster/summary.json vilau-grid/model vilau-grid/log.jsonl \
  vilau-grid/summary.json vilau-raster.log vilau-grid.log gpu.txt jobs.txt
