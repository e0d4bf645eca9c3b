#!/usr/bin/env bash
# Rebuild the bundled demo checkpoint from scratch, offline, with mfclip's own commands.
#
#   scripts/train-demo.sh [WORK_DIR]        (default: a fresh temporary folder)
#
# SYNTHETIC data only (see `mfclip synth --help` and the SYNTH.md it writes): the demo weights
# recognise those documented artifacts, not real GAN or diffusion faces.
# The bundled file is this script's output of 2026-12-05, recalibrated on 2026-12-06 by
# `mfclip calibrate -w mfclip-demo-tiny --data WORK/faces` (same tensors; docs/performance.md). Training itself adds the temperature, the
# FPR thresholds with their support, the inconclusive band, the OOD statistics, the int8 entry and
# the generator model for attribution (docs/attribution.md): the demo names its seven synthetic
# artifacts, which are not real generators. Its records name the data by folder name and
# sample-list digest, never by path.
set -euo pipefail

bundled="$(cd "$(dirname "${BASH_SOURCE[0]}")/../src/mfclip_cli/weights" && pwd)"
work="${1:-$(mktemp -d)}"
export HF_HUB_OFFLINE=1

mfclip synth "$work/synth" --n 400 --seed 0
mfclip prepare "$work/synth" --out "$work/faces" --config tiny --device cpu --quiet
mfclip train --data "$work/faces" --config tiny --protocol in-domain --epochs 20 --batch-size 16 \
  --lr 3e-3 --seed 0 --device cpu --out "$work/run"
mfclip eval --data "$work/faces" --protocol in-domain --weights "$work/run/best.safetensors" \
  --device cpu --json "$work/eval.json"
mfclip weights add "$work/run/best.safetensors" --name mfclip-demo-tiny --demo --default --force \
  --store "$bundled" \
  --eval "$work/eval.json" \
  --trained-on "mfclip synth --n 400 --seed 0 (synthetic artifacts on public-domain faces), prepared with the tiny config, in-domain protocol"
echo "registered in $bundled/registry.json (work files in $work)"
