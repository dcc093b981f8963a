#!/usr/bin/env bash
# Train `stm` (issue 3) on a lent GPU machine in calls shorter than the device tool's 10-minute
# limit. Call it again and again on the same warm machine: each call generates the synthetic
# data if it is missing, trains until its time is up (checkpoints are atomic, so the next call
# resumes from the newest), and once the run has finished scores the held-out set and copies the
# weights and scores to $OUT.
#
#   bash scripts/gpu_train_stm.sh          # in a device `run`, repeated until $OUT/heldout.json
#
# No install: the device's python3 has PyTorch and the pure-Python dependencies but no PyAV, so
# the data are written without videos and nothing here imports PyAV. Settings by environment:
# STEPS, BATCH, LR, WORKERS, DICE (soft Dice weight), INIT (weights to start from: default the
# shipped stm, empty for random initialisation), CLIPS (fresh training clips, seed 5: the shipped
# stm has seen seeds 1 and 4; fresh clips were worth far more than passes over the same ones),
# CLIP_LEN, MAX_SKIP and SKIP_SCHEDULE (training clips; e.g. SKIP_SCHEDULE=0.1:12,0.7:5 for a
# curriculum: --max-skip first, 12 from 10% of the steps, 5 from 70%), SCALE_RANGE and MIN_SIDE
# ("LOW HIGH" and N: train on clips resized by a factor from that range, and record in the weights
# that frames with a shorter side under N run scaled up to N, so validation and the held-out score
# run that way too; e.g. SCALE_RANGE="1.7 2.3" MIN_SIDE=320 trains at twice the scale, as the stm
# shipped since session 17 was; BENCHMARKS.md, "Twice the scale"), CALL_SECONDS (time this call may use), DATA, RUN, OUT. Training runs in bfloat16 autocast (--amp) with a soft Dice term added to the CE.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
steps=${STEPS:-12000} batch=${BATCH:-8} lr=${LR:-5e-4} workers=${WORKERS:-8} dice=${DICE:-1.0}
clips=${CLIPS:-4000} clip_len=${CLIP_LEN:-3} max_skip=${MAX_SKIP:-5} skip_schedule=${SKIP_SCHEDULE:-}
scale_range=${SCALE_RANGE:-} min_side=${MIN_SIDE:-}
init=${INIT-vseg/weights/stm.safetensors}
call_seconds=${CALL_SECONDS:-540}
data=${DATA:-runs/gpu-data} run=${RUN:-runs/gpu-stm} out=${OUT:-runs/gpu-out}
start=$(date +%s)
mkdir -p "$out"

# Fresh training clips (seed 5) and the held-out set of BENCHMARKS.md / the model cards (seed 2),
# 160x288, 30 frames, rendered on every core (4000 clips: ~2.4 GB).
if [ ! -f "$data/seed5/synth_vos.json" ] || [ ! -f "$data/seed2/synth_vos.json" ]; then
  $py -m vseg data synth-vos --out "$data/seed5" --clips "$clips" --seed 5 --frames 30 --height 160 --width 288 \
      --val-fraction 0.005 --no-videos --workers "$(nproc)"
  $py -m vseg data synth-vos --out "$data/seed2" --clips 30 --seed 2 --frames 30 --height 160 --width 288 \
      --val-fraction 1.0 --no-videos
fi

if [ ! -f "$run/stm.safetensors" ]; then
  left=$(( call_seconds - ($(date +%s) - start) ))
  from_args=()
  if [ -n "$init" ]; then from_args=(--init-weights "$init"); fi
  if compgen -G "$run/checkpoints/step_*" > /dev/null; then from_args+=(--resume "$run"); fi
  if [ -n "$skip_schedule" ]; then from_args+=(--skip-schedule "$skip_schedule"); fi
  if [ -n "$min_side" ]; then from_args+=(--min-side "$min_side"); fi
  # shellcheck disable=SC2206  # "LOW HIGH" splits into two arguments on purpose
  if [ -n "$scale_range" ]; then from_args+=(--scale-range $scale_range); fi
  set +e
  timeout "$left" $py -m vseg train --model stm --data "$data/seed5" --steps "$steps" --batch-size "$batch" \
      --clip-len "$clip_len" --max-skip "$max_skip" --lr "$lr" --amp --dice-weight "$dice" --freeze-norm-at 0.8 \
      --workers "$workers" --val-data "$data/seed5" --val-every 2000 \
      --run-dir "$run" --json "$out/train.json" "${from_args[@]}" 2>&1 | tee -a "$out/train.log"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -eq 124 ]; then echo "time is up for this call: run the script again to resume"; exit 0; fi
  [ "$rc" -eq 0 ] || exit "$rc"
fi

$py - "$run/stm.safetensors" "$data/seed2" "$out/heldout.json" <<'EOF'
import sys
from vseg.jsonio import write_json
from vseg.models.weights import load_named_model
from vseg.train import validate_vos
weights, data, out = sys.argv[1:]
scores = validate_vos(load_named_model("stm", weights), data, split="val")  # at the weights' min_side
write_json(out, {k: scores[k] for k in ("J&F", "J", "F", "num_sequences", "num_objects", "sequences")})
print(f"held-out seed-2 J&F {scores['J&F']:.2f} (J {scores['J']:.2f}, F {scores['F']:.2f})")
EOF
cp "$run/stm.safetensors" "$out/"
