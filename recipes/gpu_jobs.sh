# Shared pieces of the fixed-time GPU recipes in recipes/*_gpu.sh (sourced; expects $py, $out, $device and
# $start).

# vilau_job INIT_FROM LR WARMUP BUDGET_SECONDS WORKERS [NAME [more train options]]: continue VILA-U stage 2
# from a finished folder into $out/NAME (default vilau) for a wall-clock budget (killed 100 s after it, so
# that the packing always runs).
vilau_job() {
  local init=$1 lr=$2 warmup=$3 budget=$4 workers=$5 name=${6:-vilau}
  shift $(( $# < 6 ? $# : 6 ))
  timeout $(( budget + 100 )) "$py" -m genfoundry.cli train vilau --out "$out/$name" --init-from "$init" \
    --device "$device" --tower-steps 0 --llm-steps 1000000 --batch-size 64 --lr "$lr" --warmup-steps "$warmup" \
    --num-workers "$workers" --save-every 1000000 --log-every 50 \
    --max-minutes-llm "$(echo "$budget" | awk '{print $1 / 60}')" "$@" >"$out/$name.log" 2>&1
  echo "$name exit $? after $(( $(date +%s) - start )) s" | tee -a "$out/jobs.txt"
}

# sana_continue_job NAME INIT_FROM BUDGET_SECONDS GUARD_SECONDS BATCH [more --set overrides]: continue the
# DiT of a SANA pipeline folder (its text encoder and DC-AE reused unchanged; fresh optimizer, lr 3e-4) for a
# wall-clock budget, killed GUARD s after it so that the packing always runs. Expects $scenes $workers $vals.
sana_continue_job() {
  local name=$1 init=$2 budget=$3 guard=$4 batch=$5
  shift 5
  timeout $(( budget + guard )) "$py" -m genfoundry.sana.train_cli train sana --preset cpu --device "$device" \
    --out "$out/$name" --set data.scenes=$scenes --set data.workers=$workers \
    --set text.init_from="\"$init\"" --set dcae.init_from="\"$init\"" --set dcae.steps=0 \
    --set dit.init_from="\"$init\"" --set dit.batch_size=$batch --set dit.lr=3e-4 --set dit.warmup=100 \
    --set dit.steps=1000000 --set dit.max_seconds="$budget" --set eval_prompts=0 \
    --set validation_prompts=$vals "$@" >"$out/$name.log" 2>&1
  echo "$name exit $? after $(( $(date +%s) - start )) s" | tee -a "$out/jobs.txt"
}

# pack ITEM...: the existing items of $out (no checkpoints, no frozen VILA-U tower) as
# results.tar.part-* pieces of at most 15 MiB (small enough to copy back from a remote GPU machine that
# limits the size of each returned file).
pack() {
  local items=() f
  for f in "$@"; do [ -e "$out/$f" ] && items+=("$f"); done
  tar -cf "$out/results.tar" -C "$out" --exclude='*.pt' --exclude='vilau*/model/vision_tower/model.safetensors' \
    "${items[@]}" && split -b 15M "$out/results.tar" "$out/results.tar.part-"
  echo "total $(( $(date +%s) - start )) s" | tee -a "$out/jobs.txt"
}
