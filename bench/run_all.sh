#!/usr/bin/env bash
# Every benchmark behind docs/BENCHMARKS.md, one after the other (the machine has 2 shared cores, so
# nothing else should run meanwhile). Outputs land in docs/bench/. Usage: bash bench/run_all.sh [VAL_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VAL=${1:-../shared/datasets/val}
OUT=docs/bench
mkdir -p "$OUT"
PY=.venv/bin/python
$PY bench/codec_speed.py --images 8 --threads 2 --json $OUT/codec_speed.json 2>&1 | grep -v Warning | tee $OUT/codec_speed.txt
$PY bench/codec_speed.py --images 8 --threads 1 --adapt-blocks 0 16k 16 --matmul int8 float --json $OUT/codec_speed_1thread.json 2>&1 \
  | grep -v Warning | tee $OUT/codec_speed_1thread.txt
$PY bench/ratio.py "$VAL" --out $OUT/ratio_val.json 2>&1 | grep -v Warning | tee $OUT/ratio_val.txt
$PY bench/first_block.py "$VAL" 2>&1 | grep -v Warning | tee $OUT/first_block.txt
$PY bench/first_block.py "$VAL" --all --crop 32 2>&1 | grep -v Warning | tee $OUT/first_block_crop32.txt
$PY bench/first_block.py "$VAL" --all --crop 64 2>&1 | grep -v Warning | tee $OUT/first_block_crop64.txt
$PY bench/pipeline_overhead.py --crop 256 --json 2>&1 | grep -v Warning | tee $OUT/pipeline_overhead.txt
$PY bench/memory.py --megapixels 24 2>&1 | grep -v Warning | tee $OUT/memory.txt
$PY bench/rans_search.py 2>&1 | grep -v Warning | tee $OUT/rans_search.txt
$PY bench/patterns.py 2>&1 | grep -v Warning | tee $OUT/patterns.txt
$PY bench/patterns.py --adapted 2>&1 | grep -v Warning | tee $OUT/patterns_adapted.txt
$PY bench/block_edges.py "$VAL" --crop 256 2>&1 | grep -v Warning | tee $OUT/block_edges.txt
$PY bench/interpolation_bound.py "$VAL" --crop 256 2>&1 | grep -v Warning | tee $OUT/interpolation_bound.txt
$PY bench/predictor.py "$VAL" --models bitswap_core/zoo/default.safetensors 2>&1 | grep -v Warning | tee $OUT/predictor.txt
$PY bench/adaptation.py "$VAL" --blocks 0 16s 16o 16n 16b 16k 16c 16l 16 2>&1 | grep -v Warning | tee $OUT/adaptation_val.txt
$PY bench/adaptation_elbo.py "$VAL"/usc-4.1.0*.png --settings 16o 16n 2>&1 | grep -v Warning | tee $OUT/adaptation_elbo_usc41.txt
$PY bench/bit_breakdown.py "$VAL"/waterloo-serrano.png 2>&1 | grep -v Warning | tee $OUT/bit_breakdown_serrano.txt
$PY bench/mean_adaptation.py "$VAL" --crop 256 2>&1 | grep -v Warning | tee $OUT/mean_adaptation_crop256.txt
$PY bench/distribution_headroom.py "$VAL"/waterloo-tulips.png "$VAL"/usc-4.1.04.png "$VAL"/usc-4.2.07.png "$VAL"/usc-4.1.07.png \
  --model bitswap_core/zoo/default-v5-653383b7.safetensors 2>&1 | grep -v Warning | tee $OUT/distribution_headroom.txt
$PY bench/latent_shift.py "$VAL"/waterloo-serrano.png "$VAL"/usc-4.1.04.png "$VAL"/waterloo-tulips.png "$VAL"/usc-4.2.01.png \
  "$VAL"/usc-4.1.08.png 2>&1 | grep -v Warning | tee $OUT/latent_shift.txt
$PY bench/block_side_elbo.py "$VAL" 2>&1 | grep -v Warning | tee $OUT/block_side_elbo.txt
$PY bench/block_side.py "$VAL"/*.png --sides 32,64,128 --out $OUT/block_side_val.json 2>&1 | grep -v Warning \
  | tee $OUT/block_side_val.txt
$PY bench/block_side.py "$VAL"/*.png --particles 8 --sides 32,64 --out $OUT/block_side_val_k8.json 2>&1 \
  | grep -v Warning | tee $OUT/block_side_val_k8.txt
