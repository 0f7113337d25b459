"""The process connector's messages, decoded: captured from the host kernel
(6.18) while a Python child started a thread, renamed itself and exited."""

from __future__ import annotations

import struct

from filewarden.host.proc_connector import ProcEvent, parse_messages

PARENT, CHILD, THREAD = 0x22A5, 0x22A6, 0x22A7

# One datagram each, as recv() returned them; the comment says what the
# kernel reported.
ACK = bytes.fromhex(  # PROC_EVENT_NONE: the listen request, err 0
    "4c000000030000002c0a00000000000001000000010000002c0a000001000000280000000000000000000000e79ed14eae000000"
    "000000000000000000000000000000000000000000000000"
)
FORK = bytes.fromhex(  # PARENT forked CHILD
    "4c000000030000002d0a00000000000001000000010000002d0a0000000000002800000001000000000000001298d24eae000000"
    "a5220000a5220000a6220000a62200000000000000000000"
)
EXEC = bytes.fromhex(  # CHILD ran python
    "4c000000030000002e0a00000000000001000000010000002e0a00000000000028000000020000000000000096edd44eae000000"
    "a6220000a622000000000000000000000000000000000000"
)
THREAD_FORK = bytes.fromhex(  # CHILD started THREAD (the parent named is the real parent, PARENT)
    "4c000000030000002f0a00000000000001000000010000002f0a0000000000002800000001000000000000006bd4874fae000000"
    "a5220000a5220000a7220000a62200000000000000000000"
)
COMM = bytes.fromhex(  # CHILD wrote "renamed" to /proc/self/comm
    "4c00000003000000300a0000000000000100000001000000300a00000000000028000000000200000000000074f9894fae000000"
    "a6220000a622000072656e616d6564000000000000000000"
)
EXIT = bytes.fromhex(  # CHILD's leader exited (exit_signal SIGCHLD, parent PARENT)
    "4c00000003000000310a0000000000000100000001000000310a0000000000002800000000000080000000006649aa4fae000000"
    "a6220000a62200000000000011000000a5220000a5220000"
)
THREAD_EXIT = bytes.fromhex(  # THREAD exited (exit_signal -1)
    "4c00000003000000320a0000000000000100000001000000320a0000000000002800000000000080000000008b6aae4fae000000"
    "a7220000a622000000000000ffffffff0000000000000000"
)


def test_captured_messages_decode_to_process_events() -> None:
    assert parse_messages(ACK) == ([], 0)
    assert parse_messages(FORK) == ([ProcEvent("fork", CHILD, PARENT)], None)
    assert parse_messages(EXEC) == ([ProcEvent("exec", CHILD)], None)
    assert parse_messages(COMM) == ([ProcEvent("comm", CHILD, comm=b"renamed")], None)
    assert parse_messages(EXIT) == ([ProcEvent("exit", CHILD)], None)


def test_threads_are_left_out() -> None:
    assert parse_messages(THREAD_FORK) == ([], None)
    assert parse_messages(THREAD_EXIT) == ([], None)


def test_several_messages_in_one_datagram_and_broken_ones() -> None:
    assert parse_messages(FORK + EXEC + EXIT)[0] == [
        ProcEvent("fork", CHILD, PARENT),
        ProcEvent("exec", CHILD),
        ProcEvent("exit", CHILD),
    ]
    refused = bytearray(ACK)
    struct.pack_into("=I", refused, 52, 1)  # event_data.ack.err = EPERM
    assert parse_messages(bytes(refused)) == ([], 1)
    assert parse_messages(EXEC[:60]) == ([], None)  # cut short
    other = bytearray(EXEC)
    struct.pack_into("=I", other, 16, 2)  # another connector index than CN_IDX_PROC
    assert parse_messages(bytes(other)) == ([], None)
    uid = bytearray(EXEC)
    struct.pack_into("=I", uid, 36, 4)  # PROC_EVENT_UID: not followed
    assert parse_messages(bytes(uid)) == ([], None)
    assert parse_messages(b"") == ([], None)
