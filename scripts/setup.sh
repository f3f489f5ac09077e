#!/usr/bin/env bash
# Set up fmnist on a fresh machine: the data (Debian package), a virtualenv in .venv, the package and its extras.
# Usage: bash scripts/setup.sh [EXTRAS]      (EXTRAS defaults to "all"; "dev" adds the test tools; e.g. "serve,export")
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-all}"
PY="${PYTHON:-python3}"
DATA_DIR=/usr/share/datasets/fashion-mnist

need_apt=()
if [ ! -e "$DATA_DIR/train-images-idx3-ubyte.gz" ] && [ -z "${FMNIST_DATA:-}" ] && [ ! -d data ]; then
  need_apt+=(dataset-fashion-mnist)
fi
for pkg in ${FMNIST_APT_EXTRA:-}; do need_apt+=("$pkg"); done
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing Debian packages: ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: no apt-get here; get the Fashion-MNIST IDX files from the zalandoresearch/fashion-mnist" \
         "repository and point FMNIST_DATA at their directory" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
# Skip pip when nothing changed since the last install (pyproject.toml is the only input).
stamp=".venv/.fmnist-installed-$EXTRAS-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  echo "setup: installing fmnist[$EXTRAS] into .venv (the first time takes a few minutes: PyTorch is large)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  rm -f .venv/.fmnist-installed-*
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/fmnist)"
