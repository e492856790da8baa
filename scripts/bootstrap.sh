#!/usr/bin/env bash
# Installs what `make test` and `make run` need on a fresh Debian/Ubuntu machine: the system packages
# behind the real services, then uv in ~/.local/bin (make calls it there by absolute path, so no PATH
# edit is needed). Idempotent: it installs only what is missing. As root it runs apt-get; as another
# user it runs it through sudo (which may ask for the password), else prints the line to run.
set -euo pipefail

want="${1:-test}"   # "test": every real service; "run": what the embedded defaults need
uv_version=0.13.9   # the release workflow pins the same

# python3-venv: uv is installed into its own virtual environment (a fresh Debian has no pip, and
# PEP 668 refuses `pip install --user` into the system Python).
packages_for_run=(python3-venv clamav ffmpeg libmagic1 redis-server)
packages_for_test=(python3-venv postgresql redis-server clamav clamav-daemon ffmpeg libmagic1 prometheus
  prometheus-pushgateway chromium)

if [[ "$want" == "run" ]]; then packages=("${packages_for_run[@]}"); else packages=("${packages_for_test[@]}"); fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if ((${#missing[@]})); then
  if [[ "$(id -u)" == "0" ]]; then
    as_root=()
  elif command -v sudo >/dev/null; then
    as_root=(sudo)
  else
    echo "bootstrap: missing system packages: ${missing[*]}" >&2
    echo "bootstrap: install them as root with: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}"
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

uv="$HOME/.local/bin/uv"
if [[ ! -x "$uv" ]] && ! command -v uv >/dev/null; then
  echo "bootstrap: installing uv $uv_version into $uv"
  python3 -m venv "$HOME/.local/share/hub-uv"
  "$HOME/.local/share/hub-uv/bin/python" -m pip install --quiet "uv==$uv_version"
  mkdir -p "$HOME/.local/bin"
  ln -sf "$HOME/.local/share/hub-uv/bin/uv" "$uv"
fi
