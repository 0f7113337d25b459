#!/bin/sh
# Runs inside a guest kernel booted by scripts/kernel_lab.py: prepares the
# guest and runs pytest, writing the JUnit report and the exit code to $1.
# The host's root is shared read-only; writable space is made here on tmpfs.
set -u
out=$1
shift
# --keep DIR: a host directory shared by two boots (the two-boot test).
if [ "${1:-}" = "--keep" ]; then
    export FILEWARDEN_LAB_KEEP=$2
    shift 2
fi
# --wheel DIR: the wheel and the venv it was installed into, on the host
# (tests/e2e/test_wheel.py).
if [ "${1:-}" = "--wheel" ]; then
    export FILEWARDEN_WHEEL_DIR=$2
    shift 2
fi
# --one-kernel SPEC: which tests marked one_kernel run in this suite
# (tests/e2e/conftest.py; kernel_lab.py's ONE_KERNEL_SHARES).
if [ "${1:-}" = "--one-kernel" ]; then
    export FILEWARDEN_ONE_KERNEL=$2
    shift 2
fi
repo=$(cd "$(dirname "$0")/../.." && pwd)

mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security
# A fresh tmpfs, not /tmp: in the guest /tmp is itself an overlay mount.
mkdir -p /run/fw
mount -t tmpfs -o size=768m,mode=1777 fwtmp /run/fw
mkdir -p /run/fw/tmp
# Byte code under /run/fw, not beside the sources: the repository is the
# host's (read-only here), and without a cache every Python process of the
# suite (each agent, each CLI call) would compile its modules again, seconds
# each under emulation. Written once per boot, read by every later process.
export TMPDIR=/run/fw/tmp PYTHONPYCACHEPREFIX=/run/fw/pycache FILEWARDEN_GUEST=1 FILEWARDEN_CACHE=/run/fw/cache
unset PYTHONDONTWRITEBYTECODE
# The kernel's log, followed into the results: when a guest dies without a
# report (a panic, the OOM killer), the lab prints its tail.
# cat, not dmesg: each record is written as it is read, with no buffering.
cat /dev/kmsg >"$out/kernel.log" 2>/dev/null &
echo "guest: $(uname -r), $(nproc) CPUs, LSMs: $(cat /sys/kernel/security/lsm)"
# Booted with BPF LSM off (kernel_lab.py --backend fentry): the tests run the
# agent on the fentry backend.
case ",$(cat /sys/kernel/security/lsm)," in
*,bpf,*) export FILEWARDEN_BACKEND=lsm ;;
*) export FILEWARDEN_BACKEND=fentry ;;
esac

cd "$repo"
if [ "${1:-}" = "--exec" ]; then  # kernel_lab.py exec: one command, not the suite
    shift
    PATH="$repo/.venv/bin:$PATH" PYTHONPATH="$repo" "$@"
    exit $?
fi
"$repo/.venv/bin/python" -m pytest -p no:cacheprovider --basetemp=/run/fw/pytest \
    --junitxml="$out/junit.xml" -o junit_family=xunit2 -o testpaths= "$@"
rc=$?
echo "$rc" >"$out/exit-code"
exit "$rc"
