"""The Linux audit subsystem as a peer mechanism for the kernel benchmark.

The real auditd daemon, started with its own configuration in a scratch
directory (its log on a tmpfs, never on the shared host disk), with a
watch equivalent to the agent's monitored set (``auditctl -w DIR -p wa``)
and the buffer settings of Debian's default rules (/etc/audit/audit.rules).

Two kernel facts shape how it is switched on and off:

- Once audit has been enabled, every task forked afterwards gets an audit
  context and takes the slow syscall entry/exit path, even with audit
  disabled again (``audit_alloc()`` only looks at ``audit_ever_enabled``):
  in the guest that alone costs about 10% on an open/close loop. Outside
  its own state the peer therefore leaves exactly one rule loaded,
  ``-a never,task``, which makes ``audit_alloc()`` clear the flag for new
  tasks, so a state measured after an audit state pays nothing for it.
- Without a registered daemon the kernel prints records to the console
  or holds them: audit is enabled only while the daemon runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

DEBIAN_CONF = Path("/etc/audit/auditd.conf")

# Debian's /etc/audit/rules.d/audit.rules: what an administrator gets when
# the package is installed. The kernel's default backlog (64) would lose
# records on the first burst.
DEFAULT_RULES = ("-b 8192", "--backlog_wait_time 60000", "-f 1")


class AuditError(RuntimeError):
    """auditd or auditctl cannot do what the benchmark needs; says why."""


def missing_tools() -> list[str]:
    return [tool for tool in ("auditd", "auditctl") if shutil.which(tool) is None]


def auditctl(*args: str) -> str:
    proc = subprocess.run(["auditctl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AuditError(f"auditctl {' '.join(args)}: {(proc.stderr or proc.stdout).strip()} (exit {proc.returncode})")
    return proc.stdout


# The kernel's audit netlink interface (include/uapi/linux/audit.h,
# netlink.h): status is read directly, since every auditctl call is an exec,
# and an exec over the guest's 9p root takes about a second under TCG.
NETLINK_AUDIT = 9
AUDIT_GET = 1000
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
STATUS_FIELDS = (  # struct audit_status, all u32, in order
    "mask",
    "enabled",
    "failure",
    "pid",
    "rate_limit",
    "backlog_limit",
    "lost",
    "backlog",
    "feature_bitmap",
    "backlog_wait_time",
    "backlog_wait_time_actual",
)


def status() -> dict[str, int]:
    """The kernel's audit status (what ``auditctl -s`` prints): enabled,
    pid, lost, backlog, backlog_wait_time_actual, ..."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT) as sock:
        sock.settimeout(10)
        sock.send(_NLMSG.pack(_NLMSG.size, AUDIT_GET, NLM_F_REQUEST, 1, 0))
        while True:
            data = sock.recv(65536)
            off = 0
            while off + _NLMSG.size <= len(data):
                length, kind, _, _, _ = _NLMSG.unpack_from(data, off)
                payload = data[off + _NLMSG.size : off + length]
                if kind == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", payload)[0]
                    if err:
                        raise AuditError(f"audit status: {os.strerror(err)}")
                elif kind == AUDIT_GET:
                    count = min(len(payload) // 4, len(STATUS_FIELDS))
                    return dict(zip(STATUS_FIELDS, struct.unpack_from(f"={count}I", payload), strict=False))
                off += (length + 3) & ~3
                if length == 0:
                    break


def load_rules(workdir: Path, *rules: str) -> None:
    """Applies auditctl command lines in one auditctl call (``-R``)."""
    path = workdir / "rules"
    path.write_text("".join(f"{rule}\n" for rule in rules))
    auditctl("-R", str(path))


class AuditPeer:
    """auditd with a watch on one directory.

    The daemon runs for a while (start()/stop(): a fresh log each time) and
    audit is switched on with the watch only while measured (enable()/
    disable()): starting the daemon takes seconds under TCG, switching audit
    a few auditctl calls. Disabled, with no rule but never,task, the idle
    daemon is no mechanism at work: no task is audited, no record is made.

    Use as a context manager: on exit every rule is removed, audit is
    disabled and the daemon is stopped, whatever happened meanwhile.
    """

    def __init__(self, workdir: Path, watched: Path) -> None:
        self.workdir = workdir
        self.watched = watched
        self._proc: subprocess.Popen[bytes] | None = None
        self._session = 0
        self.enabled = False
        self.log: Path | None = None
        self.before: dict[str, int] = {}  # audit status before the first start
        self.after: dict[str, int] = {}  # and after the last stop

    def __enter__(self) -> AuditPeer:
        st = status()
        if st.get("pid", 0):
            # Another daemon owns the audit socket: stopping it or sharing
            # it would falsify both its log and our counts.
            raise AuditError(f"an audit daemon (pid {st['pid']}) is already registered")
        if st.get("enabled") == 2:
            raise AuditError("audit configuration is locked (enabled 2): rules cannot be changed")
        self.disable()
        self.before = status()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            auditctl("-e", "0")
            auditctl("-D")
            self.after = status()

    @property
    def running(self) -> bool:
        return self._proc is not None

    def start(self) -> None:
        """Starts a fresh daemon with an empty log; audit stays disabled."""
        if self._proc is not None:
            raise AuditError("auditd is already running")
        self._session += 1
        session = self.workdir / f"session-{self._session}"
        conf_dir, plugins, logs = session / "conf", session / "plugins", session / "log"
        for d in (conf_dir, plugins, logs):
            d.mkdir(parents=True)
        self.log = logs / "audit.log"
        conf_dir.joinpath("auditd.conf").write_text(self._config(self.log, plugins))
        # auditd refuses a configuration file others can write.
        conf_dir.joinpath("auditd.conf").chmod(0o640)
        # -s nochange: the daemon would enable audit at start; enable() does.
        self._proc = subprocess.Popen(
            ["auditd", "-n", "-s", "nochange", "-c", str(conf_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while status().get("pid") != self._proc.pid:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace").strip() if self._proc.stderr else ""
                rc, self._proc = self._proc.returncode, None
                raise AuditError(f"auditd exited with {rc} at start: {err or 'no message'}")
            if time.monotonic() > deadline:
                self.stop()
                raise AuditError("auditd did not register with the kernel within 60 s")
            time.sleep(0.1)
        load_rules(self.workdir, *DEFAULT_RULES)

    def stop(self) -> None:
        """Disables audit and stops the daemon; its log is deleted."""
        if self._proc is None:
            return
        try:
            self.disable()
        finally:
            proc, self._proc = self._proc, None
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()
            if self.log is not None:
                # The log was counted; the next session starts from nothing.
                shutil.rmtree(self.log.parent.parent, ignore_errors=True)
                self.log = None

    def enable(self) -> None:
        """The watch in place and audit on (the daemon must run)."""
        if self._proc is None:
            raise AuditError("enable() without a running auditd")
        # -D: the never,task rule would keep the loops' children out of audit.
        load_rules(self.workdir, "-D", f"-w {self.watched} -p wa", "-e 1")
        self.enabled = True

    def disable(self) -> None:
        """Audit off, and new tasks without an audit context."""
        load_rules(self.workdir, "-e 0", "-D", "-a never,task")
        self.enabled = False

    def log_size(self) -> int:
        try:
            return os.stat(self.log).st_size if self.log else 0
        except FileNotFoundError:
            return 0

    def settle(self, timeout: float = 60.0) -> bool:
        """Waits until the kernel's backlog is empty and the log stopped
        growing: every record of the loop is then in the log. False on
        timeout."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            size = self.log_size()
            if status().get("backlog", 1) == 0 and size == last:
                return True
            last = size
            time.sleep(0.2)
        return False

    def count(self, offset: int, pid: int) -> tuple[int, int]:
        """Lines written to the log from `offset` on, and how many of them
        are SYSCALL records of process `pid` (one per audited system call)."""
        if self.log is None:
            return 0, 0
        with self.log.open("rb") as f:
            f.seek(offset)
            data = f.read()
        # Only SYSCALL records carry the acting " pid=N " (the leading
        # space keeps "ppid=N" out); bytes.count stays fast under TCG.
        return data.count(b"\n"), data.count(b" pid=%d " % pid)

    @staticmethod
    def _config(log: Path, plugins: Path) -> str:
        """Debian's auditd.conf, except where the log goes, no dispatcher
        plugins, and no rotation (each session's log is counted, then
        deleted)."""
        try:
            base = DEBIAN_CONF.read_text()
        except OSError as exc:
            raise AuditError(f"cannot read {DEBIAN_CONF}: {exc.strerror}") from None
        overrides = {"log_file": str(log), "plugin_dir": str(plugins), "max_log_file_action": "IGNORE"}
        lines = []
        for line in base.splitlines():
            key = line.split("=", 1)[0].strip()
            lines.append(f"{key} = {overrides.pop(key)}" if key in overrides else line)
        lines += [f"{key} = {value}" for key, value in overrides.items()]
        return "\n".join(lines) + "\n"
