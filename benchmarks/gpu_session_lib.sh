# Shared pieces of benchmarks/gpu_session_*.sh (sourced; expects $py, $out, $device and $start).

# vilau_job INIT_FROM LR WARMUP BUDGET_SECONDS WORKERS: continue VILA-U stage 2 from a finished folder
# for a wall-clock budget (killed 100 s after it, so that the packing always runs).
vilau_job() {
  timeout $(( $4 + 100 )) "$py" -m genfoundry.cli train vilau --out "$out/vilau" --init-from "$1" \
    --device "$device" --tower-steps 0 --llm-steps 1000000 --batch-size 64 --lr "$2" --warmup-steps "$3" \
    --num-workers "$5" --save-every 1000000 --log-every 50 \
    --max-minutes-llm "$(echo "$4" | awk '{print $1 / 60}')" >"$out/vilau.log" 2>&1
  echo "vilau exit $? after $(( $(date +%s) - start )) s" | tee -a "$out/jobs.txt"
}

# pack ITEM...: the existing items of $out (no checkpoints, no frozen VILA-U tower) as
# results.tar.part-* pieces of at most 15 MiB (the device tool returns files of up to 16 MiB).
pack() {
  local items=() f
  for f in "$@"; do [ -e "$out/$f" ] && items+=("$f"); done
  tar -cf "$out/results.tar" -C "$out" --exclude='*.pt' --exclude=vilau/model/vision_tower/model.safetensors \
    "${items[@]}" && split -b 15M "$out/results.tar" "$out/results.tar.part-"
  echo "total $(( $(date +%s) - start )) s" | tee -a "$out/jobs.txt"
}
