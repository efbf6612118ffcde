#!/usr/bin/env bash
# The GPU checks of the performance issue, as one script for the lent GPU machine (H100/H200), in the
# repository root there, with .whl/ carried (stage it here first: bash scripts/gpu_wheels.sh):
#   1. the CUDA-only tests (xformers against eager, the bias on the real kernels, the custom ops'
#      shape functions against the real kernels, bf16 + compiled + CUDA-graph steps against fp32 eager);
#   2. `dmpf bench` at MOSEI shapes on a random-weight gpt2-large, batch 32 and 128: the reference
#      recipe, then every backend in bf16, uncompiled and as CUDA graphs;
#   3. benchmarks/residual_precision.py: the bf16 step with the fp32 residual stream against a bf16 one.
# Everything lands in $OUT (the device tool brings it back). About 8 minutes on an H100, plus up to 150 s for 3.
set -uo pipefail
OUT=${OUT:-/tmp/dmpf-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 DMPF_DATA_DIR=/tmp/dmpf-data
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "gpu_checks: installing .whl/ failed (run scripts/gpu_wheels.sh here and carry .whl)"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
# the xformers wheel's extension is linked against CUDA 12's runtime; the image has CUDA 13 (see scripts/gpu_wheels.sh)
export LD_LIBRARY_PATH=/tmp/site/nvidia/cuda_runtime/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, xformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'xformers', xformers.__version__)" | tee -a "$OUT/gpu.txt"

timeout 240 python3 -m pytest -q -p no:cacheprovider -rs tests/test_xformers_ops.py \
  tests/test_model.py::test_xformers_matches_eager_on_gpu tests/test_mask.py::test_xformers_takes_the_bias_on_gpu \
  tests/test_fastpaths.py::test_gpu_fast_paths_match_fp32_eager \
  tests/test_model.py::test_the_xformers_probe_passes_on_a_working_gpu 2>&1 | tee "$OUT/pytest.log"

for bs in 32 128; do
  timeout 200 python3 -m dmpf_cli bench --dataset mosei backbone.name=gpt2-large-random --batch-size "$bs" \
    --precisions bf16 --compile off,reduce-overhead --steps 10 --warmup 3 --format json \
    > "$OUT/bench-$bs.json" 2> "$OUT/bench-$bs.err"
  python3 - "$OUT/bench-$bs.json" <<'PY' || tail -5 "$OUT/bench-$bs.err"
import json, sys
d = json.load(open(sys.argv[1]))
print(f"batch {d['batch_size']} on {d['device']}")
for r in d["rows"]:
    print(f"  {r['label']:<28} {r['ms_per_step']:9.1f} ms {r['speedup']:6.2f}x {r['peak_memory_gib'] or 0:6.2f} GiB")
PY
done

# 3. what the fp32 residual stream costs against a bf16 one (issue 13 keeps it unless it costs > 10% of the step)
timeout 150 python3 benchmarks/residual_precision.py --dataset mosei backbone.name=gpt2-large-random --batch-size 32 \
  > "$OUT/residual.json" 2> "$OUT/residual.err" && cat "$OUT/residual.json" || tail -5 "$OUT/residual.err"
