#!/usr/bin/env bash
# Installs what `make test` and `make run` need on a fresh Debian/Ubuntu machine: uv, then the system
# packages behind the real services. Idempotent: it installs only what is missing.
set -euo pipefail

want="${1:-test}"   # "test": every real service; "run": what the embedded defaults need

packages_for_run=(clamav ffmpeg libmagic1)
packages_for_test=(postgresql redis-server clamav clamav-daemon ffmpeg libmagic1 prometheus prometheus-pushgateway)

if [[ "$want" == "run" ]]; then packages=("${packages_for_run[@]}"); else packages=("${packages_for_test[@]}"); fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if ((${#missing[@]})); then
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing system packages: ${missing[*]}" >&2
    echo "bootstrap: install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

if ! command -v uv >/dev/null; then
  echo "bootstrap: installing uv"
  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet --break-system-packages uv
fi
