#!/usr/bin/env bash
# Set-up for a fresh Debian/Ubuntu machine: .venv with torch, the package, and the apt
# packages the data and the Slurm tests need. Idempotent; `make train` and `make test` run it.
#   launch/setup.sh            # everything
#   SKIP_APT=1 launch/setup.sh # Python only
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
# nginx: the HTTP shard tests; chromium: the browser test of `infogan explore` (Playwright
# drives this one: `playwright install` and its browser download are never needed)
APT_PACKAGES="dataset-fashion-mnist slurm-wlm munge nginx-light chromium"

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# A stamp keyed by pyproject.toml: re-running set-up costs nothing until dependencies change.
stamp=".venv/.installed-$(cat pyproject.toml launch/setup.sh | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  # shellcheck disable=SC2086
  .venv/bin/pip install -q $TORCH_SPEC
  .venv/bin/pip install -q -e ".[dev]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

if [ -z "${SKIP_APT:-}" ]; then
  missing=""
  for p in $APT_PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
    else
      echo "setup: missing apt packages:$missing" >&2
      echo "setup: run: sudo apt-get install -y$missing" >&2
      exit 1
    fi
  fi
fi
