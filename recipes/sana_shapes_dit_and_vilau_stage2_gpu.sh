#!/usr/bin/env bash
# Train the sana-shapes text encoder and DiT and continue stage 2 of vila-u-shapes in ONE fixed-time run on
# one GPU (three jobs side by side: the models are small, so each alone leaves it mostly idle). Every job
# stops on a wall-clock budget and then exports normally:
#   sana-a  a larger SANA DiT (width 256, depth 10) trained from scratch on the embedded DC-AE and the
#           cpu preset's text encoder (2-layer LM, first layer kept)
#   sana-b  the same DiT on a 3-layer text encoder of width 128 that keeps 2 layers (more context per
#           word, for the position prompts); the better of the two on the validation prompts ships
#   vilau   stage 2 of vila-u-shapes continued from the embedded weights (fresh optimizer, batch 64)
# usage: recipes/sana_shapes_dit_and_vilau_stage2_gpu.sh OUT_DIR [SECONDS]      SECONDS: training budget per job (380)
# SMOKE=1 runs the same commands on the CPU with tiny data and evaluation (a check of the script).
# OUT_DIR gets sana-a/, sana-b/, vilau/model/ and their logs, plus results.tar.part-* (the better SANA
# variant and the VILA-U model, no checkpoints; reassemble with cat). Each job is killed after
# SECONDS + 160 s (SANA) or + 100 s (VILA-U) so that the packing always runs.
set -uo pipefail
out="${1:?usage: recipes/sana_shapes_dit_and_vilau_stage2_gpu.sh OUT_DIR [SECONDS]}"
budget="${2:-380}"
py="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
start=$(date +%s)
. "$(dirname "$0")/gpu_jobs.sh"

device=cuda scenes=120000 evals=300 vals=100 workers=5 vworkers=4
if [ "${SMOKE:-0}" = 1 ]; then
  device=cpu scenes=600 evals=5 vals=5 workers=1 vworkers=0
fi
(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv) >"$out/gpu.txt" 2>&1

sana() {  # sana NAME [extra --set overrides]
  local name=$1; shift
  timeout $(( budget + 160 )) "$py" -m genfoundry.sana.train_cli train sana --preset cpu --device "$device" --out "$out/$name" \
    --set data.scenes=$scenes --set data.workers=$workers \
    --set dcae.init_from='"genfoundry/zoo/sana-shapes"' --set dcae.steps=0 \
    --set dit.width=256 --set dit.depth=10 --set dit.cross_heads=8 --set dit.batch_size=256 \
    --set dit.lr=6e-4 --set dit.warmup=200 --set dit.steps=1000000 --set dit.max_seconds="$budget" \
    --set eval_prompts=$evals --set validation_prompts=$vals "$@" >"$out/$name.log" 2>&1
  echo "$name exit $? after $(( $(date +%s) - start )) s" | tee -a "$out/jobs.txt"
}

sana sana-a &
sana sana-b --set text.hidden_size=128 --set text.intermediate_size=384 --set text.num_layers=3 \
  --set text.num_heads=4 --set text.feature_layers=2 --set text.steps=1000 --set text.batch_size=256 \
  --set text.lr=2e-3 --set text.warmup=50 &
vilau_job genfoundry/zoo/vila-u-shapes 1e-3 100 "$budget" $vworkers &
wait
# The SANA variant with the better validation score (best flow shift) comes back whole, the other's
# log only; models without checkpoints, split so that every piece is under 16 MiB.
best=$(for name in sana-a sana-b; do
  score=$(sed -n 's/.*validation score \([0-9.]*\).*/\1/p' "$out/$name.log" | sort -g | tail -1)
  echo "${score:--1} $name"; done | sort -g | tail -1 | cut -d' ' -f2)
echo "best SANA variant on validation: $best" | tee -a "$out/jobs.txt"
pack "$best" vilau/model vilau/log.jsonl vilau/summary.json sana-a.log sana-b.log vilau.log \
  sana-a.work/report.json sana-b.work/report.json gpu.txt jobs.txt
