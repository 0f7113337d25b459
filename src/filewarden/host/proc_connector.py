"""The kernel's process connector: every fork, exec and exit, without BPF.

A NETLINK_CONNECTOR socket in the multicast group CN_IDX_PROC that has sent
PROC_CN_MCAST_LISTEN gets one message per fork, exec, exit (and uid, gid,
sid, ptrace, comm, coredump change) of every task in the system
(drivers/connector/cn_proc.c). The fanotify backend keeps its process tree
current with them: fanotify names only the writer's pid.

What it takes:
- a kernel built with CONFIG_PROC_EVENTS (without CONFIG_CONNECTOR there is
  no NETLINK_CONNECTOR at all: socket() fails);
- CAP_NET_ADMIN in the initial user namespace, and a caller in the initial
  user and pid namespaces; a request from other namespaces is ignored
  without a word (cn_proc_mcast_ctl());
- a socket in the initial network namespace: the kernel's connector socket
  lives there (cn_init()), and netlink_broadcast() delivers to sockets of
  its own namespace only.

The listen request is acknowledged from within our send() (cn_proc_ack():
a PROC_EVENT_NONE message carrying the error), but only if someone listens
afterwards; no acknowledgement means one of the above is missing.

Messages name pids, not start times; the process tree reads those from
/proc. When the socket's buffer is full the kernel drops messages and fails
the next recv() with ENOBUFS (netlink_overrun()); read() reports that as a
`lost` event, in its place among the others.

Plain socket and struct: no ctypes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Final, Literal

# include/uapi/linux/netlink.h
NETLINK_CONNECTOR: Final = 11
_NLMSG_DONE: Final = 3  # cn_netlink_send_mult() sends every message as NLMSG_DONE
_NLMSG_HDR: Final = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# include/uapi/linux/connector.h
CN_IDX_PROC: Final = 1
CN_VAL_PROC: Final = 1
_CN_MSG: Final = struct.Struct("=IIIIHH")  # id.idx, id.val, seq, ack, len, flags
# include/uapi/linux/cn_proc.h
PROC_CN_MCAST_LISTEN: Final = 1
PROC_CN_MCAST_IGNORE: Final = 2
_PROC_EVENT_NONE: Final = 0x00000000  # the acknowledgement of a listen request
_PROC_EVENT_FORK: Final = 0x00000001
_PROC_EVENT_EXEC: Final = 0x00000002
_PROC_EVENT_COMM: Final = 0x00000200
_PROC_EVENT_EXIT: Final = 0x80000000
# struct proc_event: what, cpu, timestamp_ns, then the union event_data.
_EVENT_HDR: Final = struct.Struct("=IIQ")
_ACK: Final = struct.Struct("=I")  # err
_FORK: Final = struct.Struct("=iiii")  # parent_pid, parent_tgid, child_pid, child_tgid
_PIDS: Final = struct.Struct("=ii")  # process_pid, process_tgid: exec, exit, comm
_COMM_LEN: Final = 16  # TASK_COMM_LEN
# include/uapi/linux/capability.h
CAP_NET_ADMIN: Final = 12
# asm-generic/socket.h: SO_RCVBUF past net.core.rmem_max, for CAP_NET_ADMIN
_SO_RCVBUFFORCE: Final = 33

RCVBUF: Final = 4 << 20  # some 5,000 messages (each takes about 768 bytes of buffer)
_ACK_WAIT_S: Final = 0.25  # the acknowledgement is queued before send() returns; this is slack
_READ_SIZE: Final = 4096  # one message is 76 bytes

Kind = Literal["fork", "exec", "exit", "comm", "lost"]


class ConnectorError(OSError):
    """The process connector cannot be used here; str() says why."""


@dataclass(frozen=True, slots=True)
class ProcEvent:
    """One change to a process (a thread group; threads are left out).

    fork: `pid` is the new process, `parent_pid` the process that made it
    (its real parent: for a thread that forks, the thread group's).
    exec, exit: `pid` ran a new program, or ended (its leader did).
    comm: `pid` renamed itself to `comm`.
    lost: the kernel dropped messages here (the socket buffer was full).
    """

    kind: Kind
    pid: int = 0
    parent_pid: int = 0
    comm: bytes = b""


LOST: Final = ProcEvent("lost")


def parse_messages(buf: bytes | memoryview) -> tuple[list[ProcEvent], int | None]:
    """The process events in one datagram, and the error of a listen
    acknowledgement among them (None if there is none). Messages of other
    kinds, of threads, and cut short are skipped."""
    view = memoryview(buf)
    events: list[ProcEvent] = []
    ack: int | None = None
    off = 0
    while off + _NLMSG_HDR.size <= len(view):
        length, msg_type, _flags, _seq, _port = _NLMSG_HDR.unpack_from(view, off)
        if length < _NLMSG_HDR.size or off + length > len(view):
            break
        body = view[off + _NLMSG_HDR.size : off + length]
        off += (length + 3) & ~3  # NLMSG_ALIGN
        if msg_type != _NLMSG_DONE or len(body) < _CN_MSG.size:
            continue
        idx, val, _cseq, _cack, data_len, _cflags = _CN_MSG.unpack_from(body)
        data = body[_CN_MSG.size : _CN_MSG.size + data_len]
        if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC) or len(data) < _EVENT_HDR.size:
            continue
        what, _cpu, _ts = _EVENT_HDR.unpack_from(data)
        rest = data[_EVENT_HDR.size :]
        if what == _PROC_EVENT_NONE and len(rest) >= _ACK.size:
            (ack,) = _ACK.unpack_from(rest)
        elif what == _PROC_EVENT_FORK and len(rest) >= _FORK.size:
            _ppid, parent_tgid, child_pid, child_tgid = _FORK.unpack_from(rest)
            if child_pid == child_tgid:  # a new thread group, not a thread
                events.append(ProcEvent("fork", child_tgid, parent_tgid))
        elif what in (_PROC_EVENT_EXEC, _PROC_EVENT_EXIT, _PROC_EVENT_COMM) and len(rest) >= _PIDS.size:
            pid, tgid = _PIDS.unpack_from(rest)
            if what == _PROC_EVENT_EXEC:
                events.append(ProcEvent("exec", tgid))  # the exec'ing thread is the leader by now (de_thread())
            elif pid != tgid:
                continue  # a thread's exit or name: not the process's
            elif what == _PROC_EVENT_EXIT:
                events.append(ProcEvent("exit", pid))
            elif len(rest) >= _PIDS.size + _COMM_LEN:
                name = bytes(rest[_PIDS.size : _PIDS.size + _COMM_LEN])
                events.append(ProcEvent("comm", pid, comm=name.split(b"\0", 1)[0]))
    return events, ack


def _request(op: int) -> bytes:
    payload = struct.pack("=I", op)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    return _NLMSG_HDR.pack(_NLMSG_HDR.size + len(cn), _NLMSG_DONE, 0, 0, 0) + cn


class ProcConnector:
    """A listening process-connector socket. open() it, poll fileno(),
    read() without blocking, close() it (also as a context manager)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray(_READ_SIZE)
        self.messages = 0  # process events read
        self.losses = 0  # ENOBUFS: times the kernel dropped messages

    @classmethod
    def open(cls, *, rcvbuf: int = RCVBUF) -> ProcConnector:
        """Subscribes; raises ConnectorError with the reason if it cannot."""
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR)
        except OSError as exc:
            raise ConnectorError(exc.errno, f"no process connector in this kernel ({exc.strerror})") from None
        try:
            sock.bind((0, CN_IDX_PROC))
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.send(_request(PROC_CN_MCAST_LISTEN))
            err = _wait_ack(sock)
        except OSError as exc:
            sock.close()
            raise ConnectorError(exc.errno, f"process connector: {exc.strerror}") from None
        if err is None or err:
            sock.close()
            if err:
                raise ConnectorError(err, f"the kernel refused to report processes ({os.strerror(err)})")
            raise ConnectorError(
                errno.ENOTSUP,
                "the kernel did not acknowledge the request for process events (it needs CONFIG_PROC_EVENTS, "
                "CAP_NET_ADMIN, and the initial user, pid and network namespaces)",
            )
        sock.setblocking(False)
        return cls(sock)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self, limit: int = 4096) -> list[ProcEvent]:
        """What is queued, up to `limit` datagrams, without blocking."""
        out: list[ProcEvent] = []
        for _ in range(limit):
            try:
                n = self._sock.recv_into(self._buf)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.losses += 1
                out.append(LOST)
                continue
            events, _ = parse_messages(memoryview(self._buf)[:n])
            self.messages += len(events)
            out.extend(events)
        return out

    def close(self) -> None:
        if self._sock.fileno() < 0:
            return
        # Before 6.6 the kernel counts listeners by these requests only (not
        # by sockets), and keeps sending to the group while any is left.
        with contextlib.suppress(OSError):
            self._sock.send(_request(PROC_CN_MCAST_IGNORE))
        self._sock.close()

    def __enter__(self) -> ProcConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait_ack(sock: socket.socket) -> int | None:
    """The error of the listen acknowledgement, None if none came. Events
    queued before it are dropped: the caller reads /proc after this."""
    deadline = time.monotonic() + _ACK_WAIT_S
    buf = bytearray(_READ_SIZE)
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        try:
            n = sock.recv_into(buf, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                continue
            raise
        _, ack = parse_messages(memoryview(buf)[:n])
        if ack is not None:
            return ack
    return None
