#!/usr/bin/env bash
# Regenerates bpf/vmlinux/x86/vmlinux.h from a kernel's BTF (default: the
# running kernel's). The programs are CO-RE: any recent x86-64 kernel's
# types will do, and libbpf relocates field accesses for the kernel they
# load on. Commit the result together with a note in CHANGELOG.md.
set -euo pipefail
cd "$(dirname "$0")/.."
btf=${1:-/sys/kernel/btf/vmlinux}
bpftool btf dump file "$btf" format c >bpf/vmlinux/x86/vmlinux.h
echo "bpf/vmlinux/x86/vmlinux.h regenerated from $btf ($(uname -r))"
