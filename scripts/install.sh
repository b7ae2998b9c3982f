#!/usr/bin/env bash
# Installs mist_fairseq and its stack into the current Python environment, CPU-only and offline
# apart from the package registry. Safe to run again: finished steps are skipped.
#   1. torch first (2.13.0 is the CPU build here; a plain "torch" would pull a multi-GB CUDA build)
#   2. fairseq-fixed built against that torch (--no-build-isolation: an isolated build pulls a CUDA
#      torch into its build environment and compiles the extensions against it; --no-cache-dir so
#      pip's wheel cache cannot hand back such a wheel)
#   3. this package with its test extras; then torchaudio is removed: it comes with fairseq as a
#      CUDA build that cannot be imported, and transformers would try to import it
#   4. Java for METEOR (pycocoevalcap), from Debian's packages, if missing
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP="$PY -m pip install --disable-pip-version-check -q"

if ! $PY -c "import torch" 2>/dev/null; then
  $PIP torch==2.13.0
fi
$PIP "numpy<2" cython setuptools wheel
if ! $PY -c "import fairseq, sys; sys.exit(fairseq.__version__ != '0.12.3.1')" 2>/dev/null; then
  $PIP --no-cache-dir --no-build-isolation fairseq-fixed==0.12.3.1
fi
$PIP --no-build-isolation -e ".[test]"
$PY -m pip uninstall -y -q torchaudio 2>/dev/null || true
if ! command -v java >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless) \
      || echo "warning: could not install Java; METEOR scores will be skipped" >&2
  else
    echo "warning: no Java; METEOR scores will be skipped" >&2
  fi
fi
$PY -c "import mist_fairseq, fairseq, torch; print(f'mist_fairseq ready: fairseq {fairseq.__version__}, torch {torch.__version__}')"
