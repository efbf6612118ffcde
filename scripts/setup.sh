#!/usr/bin/env bash
# Set up the project's virtual environment in .venv (.venv-lowest with --lowest; idempotent, re-runs are fast).
#
#   bash scripts/setup.sh                          # runtime only
#   bash scripts/setup.sh --dev                    # plus the test tools and the media extra its tests use
#   bash scripts/setup.sh --docs                   # plus MkDocs, to build the documentation site (mkdocs.yml)
#   bash scripts/setup.sh --system-site-packages   # reuse a torch you already have (e.g. a CUDA build)
#   bash scripts/setup.sh --lowest                 # .venv-lowest: dmpf[dev] at the floors pyproject.toml
#                                                  # declares (scripts/floors.py); CI runs the fast tier there
#
# torch is installed first, pinned to 2.13.0, and only when the environment has no usable torch
# (>= 2.10): otherwise pip would resolve torch through xformers/transformers and may pull a
# multi-GB CUDA build, and a user's own CUDA torch must never be replaced by a CPU one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

wanted=() venv_opts=() venv=.venv lowest=""
for arg in "$@"; do
  case "$arg" in
    --dev) wanted+=(dev media opensmile) ;;  # the media tests' libraries: librosa, PyAV, soundfile, opensmile
    --docs) wanted+=(docs) ;;
    --system-site-packages) venv_opts+=(--system-site-packages) ;;
    --lowest) lowest=1 wanted+=(dev media) venv=.venv-lowest ;;  # opensmile: not at the floors (pyproject.toml)
    *) echo "setup.sh: unknown option '$arg' (expected --dev, --docs, --lowest or --system-site-packages)" >&2; exit 2 ;;
  esac
done
extras=""
if [[ ${#wanted[@]} -gt 0 ]]; then
  extras="[$(printf '%s\n' "${wanted[@]}" | sort -u | paste -sd, -)]"  # [dev], [docs], [dev,docs]
fi

PY=${PYTHON:-python3}
if [[ ! -x $venv/bin/python ]]; then
  "$PY" -m venv "${venv_opts[@]}" "$venv"
elif [[ ${#venv_opts[@]} -gt 0 ]] && ! grep -q "include-system-site-packages = true" "$venv/pyvenv.cfg"; then
  echo "setup.sh: $venv exists without --system-site-packages; remove it (rm -r $venv) and run again" >&2
  exit 2
fi
VPY=$venv/bin/python

stamp="$venv/.dmpf-setup${extras}"
want=$(cat pyproject.toml scripts/setup.sh scripts/floors.py | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

if ! "$VPY" - <<'PY' 2>/dev/null
import sys, torch
major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 10) else 1)
PY
then
  echo "setup.sh: installing torch==2.13.0"
  "$VPY" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
fi
pip_opts=()
if [[ -n $lowest ]]; then
  # the floors as constraints; torch stays the build installed above (the lower ones on PyPI are CUDA builds)
  "$VPY" -m pip install --quiet --disable-pip-version-check packaging
  "$VPY" scripts/floors.py > "$venv/floors.txt"
  pip_opts=(--constraint "$venv/floors.txt")
fi
echo "setup.sh: installing dmpf${extras} into $venv${lowest:+ at the lowest versions pyproject.toml allows}"
"$VPY" -m pip install --quiet --disable-pip-version-check -e ".${extras}" "${pip_opts[@]}"
if [[ -n $lowest ]] && "$VPY" -m pip list --format=freeze 2>/dev/null | grep -i '^nvidia-'; then
  echo "setup.sh: $venv got CUDA packages (above): torch must stay the CPU build" >&2
  exit 1
fi
echo "$want" > "$stamp"
