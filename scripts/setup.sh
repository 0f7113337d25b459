#!/usr/bin/env bash
# Installs what filewarden needs on Debian 12, as root. Idempotent: a second
# run with nothing changed installs nothing and takes about a second.
#
#   scripts/setup.sh agent   packages to build and run the agent, .venv, filewarden
#   scripts/setup.sh test    the same, plus everything the tests need
#   scripts/setup.sh bench   the same as test, plus auditd (the benchmarks' peer)
#
# Downloads and builds are cached under $FILEWARDEN_CACHE
# (default: ${XDG_CACHE_HOME:-$HOME/.cache}/filewarden).
set -euo pipefail

mode=${1:-agent}
case "$mode" in agent|test|bench) ;; *) echo "usage: $0 agent|test|bench" >&2; exit 2 ;; esac
tests=$([ "$mode" = agent ] && echo no || echo yes)
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (apt packages, and BPF programs need root)" >&2
    exit 1
fi

agent_pkgs=(python3 python3-venv python3-dev gcc libbpf1 clang llvm libbpf-dev bpftool)
test_pkgs=(qemu-system-x86 busybox-static file kmod udev crun rpm e2fsprogs systemd nats-server postgresql)
bench_pkgs=(auditd)
pkgs=("${agent_pkgs[@]}")
[ "$tests" = yes ] && pkgs+=("${test_pkgs[@]}")
[ "$mode" = bench ] && pkgs+=("${bench_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
done

# The 6.12 guest kernel comes from bookworm-backports (part of Debian's archive).
backports=/etc/apt/sources.list.d/filewarden-backports.sources
need_update=0
if [ "$tests" = yes ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    cat >"$backports" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    need_update=1
fi

if [ ${#missing[@]} -gt 0 ] || [ $need_update -eq 1 ]; then
    echo "setup: apt-get install ${missing[*]:-(sources only)}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

extras=$([ "$tests" = yes ] && echo "[dev]" || echo "[native]")
stamp=.venv/.filewarden-setup
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras $(/usr/bin/python3 -V 2>&1)"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    /usr/bin/python3 -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: pip install -e .$extras" >&2
    .venv/bin/pip install -q --disable-pip-version-check -e ".$extras"
    echo "$want" >"$stamp"
fi
# Builds the BPF objects and the compiled hot modules if a source changed
# since (cached by content; by size and time for the modules).
.venv/bin/python -m filewarden._build >/dev/null
