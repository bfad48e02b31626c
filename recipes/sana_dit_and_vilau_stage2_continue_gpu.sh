#!/usr/bin/env bash
# Continue the DiT of a SANA pipeline folder and stage 2 of a VILA-U folder (e.g. the output of
# sana_shapes_dit_and_vilau_stage2_gpu.sh) for a further fixed-time run, both jobs side by side on one GPU,
# each with a fresh optimizer and a cosine schedule over the budget (a warm restart at a lower peak
# learning rate).
# usage: recipes/sana_dit_and_vilau_stage2_continue_gpu.sh SANA_DIR VILAU_DIR OUT_DIR [SECONDS]   (SECONDS: 220)
# SMOKE=1 runs the same commands on the CPU with tiny data (a check of the script).
# OUT_DIR gets sana/, vilau/model/, logs and results.tar.part-* (models without checkpoints and without
# the frozen VILA-U vision tower; reassemble with cat). The held-out evaluation is left to the caller.
set -uo pipefail
sana_in="${1:?usage: recipes/sana_dit_and_vilau_stage2_continue_gpu.sh SANA_DIR VILAU_DIR OUT_DIR [SECONDS]}"
vilau_in="${2:?usage}" out="${3:?usage}" budget="${4:-220}"
py="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
start=$(date +%s)
. "$(dirname "$0")/gpu_jobs.sh"
device=cuda scenes=120000 vals=100 workers=6 vworkers=6
if [ "${SMOKE:-0}" = 1 ]; then
  device=cpu scenes=600 vals=3 workers=1 vworkers=0
fi
(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv) >"$out/gpu.txt" 2>&1

sana_continue_job sana "$sana_in" "$budget" 100 256 &
vilau_job "$vilau_in" 5e-4 50 "$budget" $vworkers &
wait
pack sana vilau/model vilau/log.jsonl vilau/summary.json sana.log vilau.log sana.work/report.json gpu.txt jobs.txt
