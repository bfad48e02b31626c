#!/usr/bin/env bash
# Train the embedded sana-shapes recipe in one run on ONE GPU (about 10 minutes, estimated from the step
# rates of the fixed-time H100 runs that made the zoo model; not yet run in one piece) and write the pipeline folder
# (diffusers layout, fp16, model card README.md with the measured metrics) to OUT_DIR.
#   usage: recipes/sana_shapes_gpu.sh OUT_DIR [more `genfoundry train sana` options, e.g. --seed 1]
# Checkpoints and logs go to OUT_DIR.work (add --resume to continue a killed run). To replace the embedded model:
#   recipes/sana_shapes_gpu.sh runs/sana-shapes && cp -r runs/sana-shapes genfoundry/zoo/sana-shapes
# (not OUT_DIR=genfoundry/zoo/sana-shapes directly: the .work folder would land in the zoo).
# Equivalent to: genfoundry train sana --preset gpu --device cuda --out OUT_DIR
set -euo pipefail
out="${1:?usage: recipes/sana_shapes_gpu.sh OUT_DIR [options]}"
shift
python="${PYTHON:-python}"
start=$(date +%s)
"$python" -m genfoundry.sana.train_cli train sana --preset gpu --device cuda --out "$out" "$@"
echo "total wall time (including imports and evaluation): $(( $(date +%s) - start )) s"
