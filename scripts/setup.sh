#!/usr/bin/env bash
# Prepares a checkout to run: the system OpenBLAS on Linux, then .venv with the project.
#   scripts/setup.sh        the product: the service and the notebooks (`pip install -e .`)
#   scripts/setup.sh test   that, the test tools, the trackers and the benchmarks' peers
#                           (`pip install -e ".[dev,bench,tensorboard,mlflow,wandb]"`),
#                           with PyTorch's CPU build on Linux (PyPI's Linux torch is the CUDA one, several GB)
# Safe to run again: each set reinstalls only when pyproject.toml has changed since it was installed.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-serve}" in
  serve) set=serve; target=. ;;
  test) set=test; target=".[dev,bench,tensorboard,mlflow,wandb]" ;;
  *) echo "usage: scripts/setup.sh [serve|test]" >&2; exit 2 ;;
esac

# MLX's Linux wheel links the reference BLAS (about 50x slower); the workbench loads the system
# OpenBLAS in its place when it finds one (README, "Fast CPU math").
if [ "$(uname -s)" = Linux ] && ! ls /usr/lib/*/openblas-pthread/libopenblas.so.0 >/dev/null 2>&1 \
   && ! ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so\.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null
  else
    echo "warning: no OpenBLAS found and none installed; CPU math will be slow (README, Troubleshooting)" >&2
  fi
fi

[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
pip=(.venv/bin/python -m pip)
stamp=.venv/.setup-stamp-$set
want=$( (sha256sum pyproject.toml 2>/dev/null || shasum -a 256 pyproject.toml) | cut -c1-16)
[ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && exit 0

# The version of torch that pip would install with the given extra arguments (a dry run that reads
# only the wheel's metadata), or nothing.
torch_pick() {
  "${pip[@]}" install --dry-run --no-deps --ignore-installed -q --report - "$torch_req" "$@" 2>/dev/null \
    | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["install"][0]["metadata"]["version"])' \
    2>/dev/null || true
}

# PyTorch's CPU build for the benchmarks' peer, installed before the rest so that the bench extra finds
# its torch there: the one pip finds where it looks already (a wheel on disk, a mirror), else the one on
# PyTorch's CPU index. Never PyPI's CUDA build, unless SETUP_TORCH=any says so.
install_cpu_torch() {
  torch_req=$(grep -oE '"torch==[^"]+"' pyproject.toml | tr -d '"')
  [ "$(uname -s)" = Linux ] || return 0          # macOS: PyPI's torch is the CPU (and Metal) build
  [ "${SETUP_TORCH:-cpu}" = any ] && return 0    # take whatever pip picks, e.g. a CUDA build on purpose
  # This version installed already, whichever build: nothing to do.
  if .venv/bin/python -c 'import importlib.metadata as m, sys
sys.exit(m.version("torch").split("+")[0] != sys.argv[1])' "${torch_req#torch==}" 2>/dev/null; then
    return 0
  fi
  local cpu_index=${SETUP_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
  local args
  for args in "" "--extra-index-url $cpu_index"; do
    # shellcheck disable=SC2086
    if [[ "$(torch_pick $args)" == *+cpu ]]; then
      # shellcheck disable=SC2086
      "${pip[@]}" install -q "$torch_req" $args
      return 0
    fi
  done
  cat >&2 <<EOF
error: no CPU build of $torch_req found, neither where pip looks nor on $cpu_index;
PyPI's Linux wheel is the CUDA build (several GB). Point SETUP_TORCH_INDEX at an index that has
the CPU build, put its wheel where pip finds it (pip's find-links), or set SETUP_TORCH=any to take
whatever pip picks.
EOF
  exit 1
}

"${pip[@]}" install -q --upgrade pip
if [ "$set" = test ]; then install_cpu_torch; fi
"${pip[@]}" install -q -e "$target"
echo "$want" > "$stamp"
if [ "$set" = test ]; then echo "$want" > .venv/.setup-stamp-serve; fi   # the test set holds the product
rm -f .venv/.setup-stamp                                                    # earlier versions' one stamp
