#!/usr/bin/env bash
# A fixed-time GPU run: continue the DiT of a SANA pipeline folder twice side by side, once drawing the
# GenEval categories uniformly (the control) and once with position scenes weighted up
# (dit.category_weights), both on a fresh scene stream (data.seed=1) with the same budget, and continue
# stage 2 of a VILA-U folder beside them. The caller picks the SANA variant on validation prompts.
# usage: recipes/sana_dit_position_weighted_gpu.sh SANA_DIR VILAU_DIR OUT_DIR [SECONDS] [POSITION_WEIGHT]
#        (SECONDS: 450, POSITION_WEIGHT: 2.5)
# SMOKE=1 runs the same commands on the CPU with tiny data (a check of the script).
# OUT_DIR gets sana-uniform/, sana-position/, vilau/model/, logs and results.tar.part-* (no checkpoints,
# no frozen VILA-U vision tower; reassemble with cat).
set -uo pipefail
sana_in="${1:?usage: recipes/sana_dit_position_weighted_gpu.sh SANA_DIR VILAU_DIR OUT_DIR [SECONDS] [POSITION_WEIGHT]}"
vilau_in="${2:?usage}" out="${3:?usage}" budget="${4:-450}" position_weight="${5:-2.5}"
py="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
start=$(date +%s)
. "$(dirname "$0")/gpu_jobs.sh"
device=cuda scenes=120000 vals=100 workers=5 vworkers=5 batch=256 guard=100
if [ "${SMOKE:-0}" = 1 ]; then
  device=cpu scenes=600 vals=3 workers=1 vworkers=0 batch=8 guard=900  # 2 CPU cores: slow, not stuck
fi
(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv) >"$out/gpu.txt" 2>&1

sana_continue_job sana-uniform "$sana_in" "$budget" $guard $batch --set data.seed=1 --set dit.category_weights=null &
sana_continue_job sana-position "$sana_in" "$budget" $guard $batch --set data.seed=1 \
  --set dit.category_weights="{\"position\": $position_weight}" &
vilau_job "$vilau_in" 5e-4 50 "$budget" $vworkers &
wait
pack sana-uniform sana-position vilau/model vilau/log.jsonl vilau/summary.json sana-uniform.log sana-position.log \
  vilau.log sana-uniform.work/report.json sana-position.work/report.json gpu.txt jobs.txt
