"""The directory cache (bpf/dircache.bpf.h): a directory where a change was
found unmonitored, and where no other name could be monitored, is
remembered, and later changes there are dropped before their path is
resolved (ignore reason `outside`). An entry is keyed by the directory's
dentry, inode, mount and the viewer's root, and trusted only while the
directory and the directories above it were not renamed, no mount changed
in the viewer's mount namespace and no glob was added since it was made. A
rename anywhere else, or a mount in another namespace, keeps it.

Every test counts, per step, how the hook's calls ended: emitted, ignored
as `not_selected` (the path was resolved and found unmonitored) or ignored
as `outside` (the cache answered). The steps that must come from the cache
fail if the cache is never used; the steps after a rename, a mount or a new
glob fail if the entry is not retired, since the directory's key has not
changed and only the retirement makes the hook resolve the path again.

The children here are not renamed (`comm=None`): naming a child writes
/proc/self/task/TID/comm, a file_open of its own that would blur the counts.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kernel.test_path_rename import RENAME_EXCHANGE, renameat2
from tests.support import mounts
from tests.support.monitor import Monitor, Tally, monitoring, summary
from tests.support.proc import in_child, touch


def run(work: Callable[[], object]) -> None:
    in_child(work, comm=None)


@dataclass(frozen=True)
class Change:
    """A change to a file, the hook that sees it and the action it reports."""

    hook: str
    action: str
    prepare: Callable[[Path], None]  # run by the test process itself: the agent ignores it
    make: Callable[[Path], None]  # run in a child


def _new_file(p: Path) -> None:
    p.write_bytes(b"")
    os.chmod(p, 0o644)


CHANGES = {
    "create": Change("file_open", "create", lambda p: None, touch),
    "chmod": Change("path_chmod", "chmod", _new_file, lambda p: os.chmod(p, 0o600)),
    "unlink": Change("path_unlink", "unlink", _new_file, os.unlink),
}


def outcome(later: Tally, earlier: Tally, hook: str) -> tuple[int, int, int]:
    """(emitted, ignored as not_selected, ignored as outside) of `hook`
    between two tallies."""
    moved = later.since(earlier)
    counts, reasons = moved.counters(hook), moved.reasons(hook)
    return counts["emitted"], reasons["not_selected"], reasons["outside"]


WARMED = (0, 1, 0)  # resolved, found unmonitored, remembered
FROM_CACHE = (0, 0, 2)  # two more changes there, both answered by the cache
NOT_SEEN = (0, 0, 0)
REPORTED = (1, 0, 0)


def warm_retire_change(
    mon: Monitor, change: Change, b: Path, retire: Callable[[], object], after: Path
) -> list[tuple[int, int, int]]:
    """The hook's outcome at each of four steps: a change in `b` (resolved
    and remembered), two more there (answered by the cache), `retire`, and
    one change at `after`."""
    steps: list[Callable[[], object]] = [
        lambda: run(lambda: change.make(b / "f1")),
        lambda: run(lambda: (change.make(b / "f2"), change.make(b / "f3"))),
        retire,
        lambda: run(lambda: change.make(after)),
    ]
    tallies = [mon.tally()]
    for step in steps:
        step()
        tallies.append(mon.tally())
    return [outcome(later, earlier, change.hook) for earlier, later in itertools.pairwise(tallies)]


@pytest.mark.parametrize("kind", list(CHANGES))
def test_the_cache_answers_and_a_rename_of_an_ancestor_retires_it(plain_dir: Path, kind: str) -> None:
    change = CHANGES[kind]
    watched, a = plain_dir / "mon", plain_dir / "other" / "a"
    b = a / "b"
    b.mkdir(parents=True)
    watched.mkdir()
    for name in ("f1", "f2", "f3", "f4"):
        change.prepare(b / name)
    now_b = watched / "a" / "b"
    with monitoring(f"{watched}/**") as mon:
        # b keeps its dentry, inode and mount: only the retirement of its
        # entry makes the next change resolve b's new path.
        steps = warm_retire_change(mon, change, b, lambda: run(lambda: os.rename(a, watched / "a")), now_b / "f4")
        events = mon.under(str(plain_dir))
    # Without the cache the second step would be (0, 2, 0); with an entry
    # that outlived the rename the last one would be (0, 0, 1) and no event.
    assert steps == [WARMED, FROM_CACHE, NOT_SEEN, REPORTED]
    assert summary(events) == [("rename", f"{watched}/a"), (change.action, f"{now_b}/f4")]
    assert events[0].seq < events[1].seq


def test_a_rename_within_one_directory_asks_its_entry_once(plain_dir: Path) -> None:
    """path_rename looks a directory up once when both names are in it
    (bpf/namespace.bpf.c): the first rename there is resolved and
    remembered for both names, the next ones are answered by the entry,
    and one out of it into the monitored tree is reported."""
    watched, b = plain_dir / "mon", plain_dir / "other" / "b"
    b.mkdir(parents=True)
    watched.mkdir()
    for name in ("f1", "f2", "f3"):
        _new_file(b / name)
    steps: list[Callable[[], object]] = [
        lambda: os.rename(b / "f1", b / "g1"),
        lambda: (os.rename(b / "f2", b / "g2"), os.rename(b / "f3", b / "g3")),
        lambda: os.rename(b / "g1", watched / "g1"),
    ]
    with monitoring(f"{watched}/**") as mon:
        tallies = [mon.tally()]
        for step in steps:
            run(step)
            tallies.append(mon.tally())
        events = mon.under(str(plain_dir))
    outcomes = [outcome(later, earlier, "path_rename") for earlier, later in itertools.pairwise(tallies)]
    # Had the first rename not remembered the directory, the second step
    # would be (0, 2, 0).
    assert outcomes == [WARMED, FROM_CACHE, REPORTED]
    assert summary(events) == [("rename", f"{watched}/g1")]


KEPT = (0, 0, 1)  # the change after the rename: still answered by the cache
RESOLVED_AGAIN = (0, 1, 0)  # the entry was retired: resolved, found unmonitored


@pytest.mark.parametrize("kind", list(CHANGES))
@pytest.mark.parametrize("where", ["sibling", "unrelated", "child", "into"])
def test_a_rename_elsewhere_keeps_the_entry(plain_dir: Path, kind: str, where: str) -> None:
    """A rename that moves no directory on b's way up to the root leaves
    b's entry in place: a sibling tree of b's parent, a directory nowhere
    near b, a file of b's own (b is the renamed name's parent: only the
    renamed dentry's d_seq moves, __d_move() in fs/dcache.c), and a
    directory moved into b. Every one of them moves rename_lock's count, so
    the entry would be retired if it were trusted only while that count
    stands still, and the last step would be (0, 1, 0)."""
    change = CHANGES[kind]
    watched, a = plain_dir / "mon", plain_dir / "other" / "a"
    b = a / "b"
    b.mkdir(parents=True)
    watched.mkdir()
    sibling, unrelated = plain_dir / "other" / "sib", plain_dir / "else" / "x" / "y"
    sibling.mkdir()
    unrelated.mkdir(parents=True)
    (b / "g").write_bytes(b"")
    for name in ("f1", "f2", "f3", "f4"):
        change.prepare(b / name)
    renames = {
        "sibling": (sibling, plain_dir / "other" / "sib2"),
        "unrelated": (unrelated.parent, plain_dir / "else" / "x2"),
        "child": (b / "g", b / "h"),
        "into": (unrelated, b / "y"),
    }
    source, dest = renames[where]
    with monitoring(f"{watched}/**") as mon:
        steps = warm_retire_change(mon, change, b, lambda: run(lambda: os.rename(source, dest)), b / "f4")
        events = mon.under(str(plain_dir))
    assert steps == [WARMED, FROM_CACHE, NOT_SEEN, KEPT]
    assert events == []


@pytest.mark.parametrize("kind", list(CHANGES))
@pytest.mark.parametrize("moved", ["itself", "parent", "grandparent"])
def test_a_rename_of_an_ancestor_outside_the_monitored_tree_retires_the_entry(
    plain_dir: Path, kind: str, moved: str
) -> None:
    """b, its parent or its grandparent renamed, all of it staying outside
    the monitored tree: b keeps its dentry, inode and mount, so only the
    entry's retirement makes the very next change in b resolved again
    (found unmonitored as before), whichever dentry on b's way up moved."""
    change = CHANGES[kind]
    watched, top = plain_dir / "mon", plain_dir / "other"
    b = top / "a" / "b"
    b.mkdir(parents=True)
    watched.mkdir()
    for name in ("f1", "f2", "f3", "f4"):
        change.prepare(b / name)
    renames = {
        "itself": (b, top / "a" / "b2", top / "a" / "b2"),
        "parent": (top / "a", top / "a2", top / "a2" / "b"),
        "grandparent": (top, plain_dir / "other2", plain_dir / "other2" / "a" / "b"),
    }
    source, dest, now_b = renames[moved]
    with monitoring(f"{watched}/**") as mon:
        steps = warm_retire_change(mon, change, b, lambda: run(lambda: os.rename(source, dest)), now_b / "f4")
        events = mon.under(str(plain_dir))
    assert steps == [WARMED, FROM_CACHE, NOT_SEEN, RESOLVED_AGAIN]
    assert events == []


FINGERPRINT_DEPTH = 32  # FW_DIR_DEPTH, bpf/walk.bpf.c


def test_a_directory_deeper_than_the_fingerprint_walk_is_retired_by_any_rename(plain_dir: Path) -> None:
    """Past FW_DIR_DEPTH steps up, an entry is trusted only while
    rename_lock's count stands still, as every entry was before the
    fingerprint: the cache still answers there, and a rename elsewhere
    retires the entry. The walk up passes plain_dir's mount point too, so b
    is further from the root than the names made here."""
    change = CHANGES["create"]
    watched, elsewhere = plain_dir / "mon", plain_dir / "else" / "x"
    b = plain_dir.joinpath("other", *["d"] * FINGERPRINT_DEPTH, "b")
    b.mkdir(parents=True)
    watched.mkdir()
    elsewhere.mkdir(parents=True)
    with monitoring(f"{watched}/**") as mon:
        rename = lambda: run(lambda: os.rename(elsewhere, plain_dir / "else" / "x2"))  # noqa: E731
        steps = warm_retire_change(mon, change, b, rename, b / "f4")
        events = mon.under(str(plain_dir))
    assert steps == [WARMED, FROM_CACHE, NOT_SEEN, RESOLVED_AGAIN]
    assert events == []


@pytest.mark.parametrize("kind", list(CHANGES))
def test_the_very_next_change_after_an_ancestor_is_renamed_in_is_reported(plain_dir: Path, kind: str) -> None:
    """One process, working in b: two changes, the rename of b's parent into
    the monitored tree, and at once a third change. The third is made by a
    name relative to b, so its lookup never passes the renamed directory."""
    change = CHANGES[kind]
    watched, a = plain_dir / "mon", plain_dir / "other" / "a"
    b = a / "b"
    b.mkdir(parents=True)
    watched.mkdir()
    for name in ("f1", "f2", "f3"):
        change.prepare(b / name)

    def work() -> None:
        os.chdir(b)
        change.make(Path("f1"))
        change.make(Path("f2"))
        os.rename(a, watched / "a")
        change.make(Path("f3"))

    with monitoring(f"{watched}/**") as mon:
        t0 = mon.tally()
        run(work)
        t1 = mon.tally()
        events = mon.under(str(plain_dir))
    # f1 resolved, f2 from the cache, f3 reported: (1, 1, 0) if the cache
    # were never used, (0, 1, 2) and no event for f3 if it outlived the rename.
    assert outcome(t1, t0, change.hook) == (1, 1, 1)
    assert summary(events) == [("rename", f"{watched}/a"), (change.action, f"{watched}/a/b/f3")]
    assert events[0].seq < events[1].seq


_libc = ctypes.CDLL(None, use_errno=True)
MS_BIND, MS_MOVE = 4096, 8192  # include/uapi/linux/mount.h


def mount_syscall(source: Path, target: Path, flags: int) -> None:
    """mount(2) itself: mount(8) would also write its own files under
    /run/mount, through the very hooks these tests count."""
    if _libc.mount(bytes(source), bytes(target), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(target))


CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x00020000, 16384, 1 << 18  # include/uapi/linux/sched.h, mount.h


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), what)


def mount_in_a_namespace_of_its_own(where: Path) -> None:
    """In a mount namespace of the caller's own, private (nothing it mounts
    propagates back): a tmpfs mounted on `where`, then unmounted, as a
    container's runtime does when it starts and stops."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare")
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "/")
    _check(_libc.mount(b"fwns", bytes(where), b"tmpfs", 0, None), str(where))
    _check(_libc.umount2(bytes(where), 0), str(where))


@pytest.mark.parametrize("kind", list(CHANGES))
def test_a_mount_in_another_namespace_keeps_the_entry(plain_dir: Path, kind: str) -> None:
    """An entry is trusted while the viewer's mount namespace has not
    changed (fw_dir_mounts(), mnt_namespace.event): a tmpfs mounted and
    unmounted in a namespace of its own leaves b's entry in place, and the
    change after it is answered by the cache. Were entries still held to
    mount_lock's count, which every mount anywhere moves, the last step
    would be (0, 1, 0)."""
    change = CHANGES[kind]
    watched, b, where = plain_dir / "mon", plain_dir / "other" / "a" / "b", plain_dir / "elsewhere"
    for d in (watched, b, where):
        d.mkdir(parents=True)
    for name in ("f1", "f2", "f3", "f4"):
        change.prepare(b / name)
    with monitoring(f"{watched}/**") as mon:
        retire = lambda: run(lambda: mount_in_a_namespace_of_its_own(where))  # noqa: E731
        steps = warm_retire_change(mon, change, b, retire, b / "f4")
        events = mon.under(str(plain_dir))
    assert steps == [WARMED, FROM_CACHE, NOT_SEEN, KEPT]
    assert events == []


@pytest.mark.parametrize("kind", list(CHANGES))
@pytest.mark.parametrize("points", ["fresh", "mount-points-already"])
def test_a_mount_moved_into_the_monitored_tree_retires_the_cache(plain_dir: Path, points: str, kind: str) -> None:
    """b lives on a mount of its own, which MS_MOVE takes into the monitored
    tree: b keeps its dentry, its inode and the very same mount, so only
    the entry's retirement makes the next change resolve b's new path.

    Attaching a mount also moves rename_lock's count whenever it makes a
    dentry a mount point for the first time (d_set_mounted(), fs/dcache.c):
    the directory it goes onto, and the moved mount's own root, which
    attach_recursive_mnt() (fs/namespace.c) makes a mount point in advance.
    Entries no longer follow that count (but for directories deeper than
    the fingerprint walk), and no dentry's d_seq moves: in both cases only
    the namespace's count of mount changes (mnt_namespace.event) retires
    the entry. The case with both already mount
    points (through other views of them: nothing is mounted on `target` or
    on the moved mount itself) is the one that failed, when rename_lock's
    count was followed, if mount changes did not retire entries."""
    change = CHANGES[kind]
    watched, other = plain_dir / "mon", plain_dir / "other"
    holder, target = other / "m", watched / "m"
    holder.mkdir(parents=True)
    target.mkdir(parents=True)
    # A mount cannot be moved away from a shared parent (do_move_mount()).
    mounts.mount("--make-private", str(plain_dir))
    mounts.mount("-t", "tmpfs", "-o", "size=8m", "fwmove", str(holder))
    b = holder / "a" / "b"
    b.mkdir(parents=True)
    for name in ("f1", "f2", "f3", "f4"):
        change.prepare(b / name)
    now_b = target / "a" / "b"
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(mounts.umount, holder)
        cleanup.callback(mounts.umount, target)
        if points == "mount-points-already":
            elsewhere = cleanup.enter_context(mounts.tmpfs())
            mounts.mount("--make-private", str(elsewhere))
            # Other views of plain_dir and of the mount at `holder`, and a
            # mount on `target`'s directory and on that mount's root, each
            # through its view.
            for source, view, pinned in ((plain_dir, "view", "mon/m"), (holder, "holder-view", "")):
                (elsewhere / view).mkdir()
                mounts.mount("--bind", str(source), str(elsewhere / view))
                cleanup.callback(mounts.umount, elsewhere / view)
                mounts.mount("-t", "tmpfs", "-o", "size=1m", "fwpin", str(elsewhere / view / pinned))
                cleanup.callback(mounts.umount, elsewhere / view / pinned)
        mon = cleanup.enter_context(monitoring(f"{watched}/**"))
        move = lambda: run(lambda: mount_syscall(holder, target, MS_MOVE))  # noqa: E731
        steps = warm_retire_change(mon, change, b, move, now_b / "f4")
        events = mon.under(str(plain_dir))
    assert steps == [WARMED, FROM_CACHE, NOT_SEEN, REPORTED]
    assert summary(events) == [("mount", str(target)), (change.action, f"{now_b}/f4")]
    assert events[0].seq < events[1].seq


@pytest.mark.parametrize("kind", list(CHANGES))
def test_a_directory_seen_through_another_mount_is_judged_by_that_path(plain_dir: Path, kind: str) -> None:
    """b's parent is bind-mounted into the monitored tree before anything is
    remembered (and after the agent marked the tree, so nothing of b is
    marked). A change through the bind mount is b seen through another
    mount: nothing is renamed or mounted after the entry is made, so only
    the mount being part of the key keeps the entry made through the first
    mount from answering for it."""
    change = CHANGES[kind]
    watched, a = plain_dir / "mon", plain_dir / "other" / "a"
    b, view = a / "b", watched / "a2"
    b.mkdir(parents=True)
    view.mkdir(parents=True)
    for name in ("f1", "f2", "f3", "f4"):
        change.prepare(b / name)
    try:
        with monitoring(f"{watched}/**") as mon:
            run(lambda: mount_syscall(a, view, MS_BIND))
            t0 = mon.tally()
            run(lambda: change.make(b / "f1"))
            t1 = mon.tally()
            run(lambda: (change.make(b / "f2"), change.make(b / "f3")))
            t2 = mon.tally()
            run(lambda: change.make(view / "b" / "f4"))
            t3 = mon.tally()
            events = mon.under(str(plain_dir))
    finally:
        mounts.umount(view)
    steps = [outcome(t1, t0, change.hook), outcome(t2, t1, change.hook), outcome(t3, t2, change.hook)]
    assert steps == [WARMED, FROM_CACHE, REPORTED]
    assert summary(events) == [("mount", str(view)), (change.action, f"{view}/b/f4")]
    assert events[0].seq < events[1].seq


def test_a_new_glob_retires_the_cache(plain_dir: Path) -> None:
    """A glob added to a running agent that selects files in a remembered
    directory. Not a whole tree (`*.conf`): the agent marks no directory for
    it, so a new file there is found by its path alone."""
    change = CHANGES["create"]
    watched, b = plain_dir / "mon", plain_dir / "other" / "a" / "b"
    b.mkdir(parents=True)
    watched.mkdir()
    with monitoring(f"{watched}/**") as mon:
        new_glob = lambda: mon.agent.set_paths([f"{watched}/**", f"{b}/*.conf"])  # noqa: E731
        steps = warm_retire_change(mon, change, b, new_glob, b / "f4.conf")
        events = mon.under(str(plain_dir))
    assert steps == [WARMED, FROM_CACHE, NOT_SEEN, REPORTED]
    assert summary(events) == [("create", f"{b}/f4.conf")]


def test_a_directory_made_where_a_removed_one_was_is_not_taken_for_it(plain_dir: Path) -> None:
    """The key holds the directory's dentry and inode by address. A removed
    directory's dentry and inode go back to their slabs after an RCU grace
    period, and the next directory made on the same CPU is likely to get
    both addresses back, with no rename and no mount in between. Its changes
    must still be judged by its own path.

    The glob is not a whole tree, so the new directories carry no mark and
    their files are found by path, on both backends."""
    watched, other = plain_dir / "mon", plain_dir / "other"
    watched.mkdir()
    other.mkdir()
    rounds = 20

    def work(i: int) -> None:
        os.sched_setaffinity(0, {0})  # frees and allocations on one CPU's slabs
        gone = other / f"gone{i}"
        os.mkdir(gone)
        touch(gone / "f")  # resolved and remembered
        touch(gone / "g")  # answered by the cache
        os.unlink(gone / "f")
        os.unlink(gone / "g")
        os.rmdir(gone)
        time.sleep(0.3)  # an RCU grace period: the dentry and inode are freed
        made = watched / f"new{i}"
        os.mkdir(made)
        touch(made / "cfg")

    with monitoring(f"{watched}/*/cfg") as mon:
        t0 = mon.tally()
        for i in range(rounds):
            run(lambda i=i: work(i))
        t1 = mon.tally()
        events = mon.under(str(plain_dir))
    emitted, not_selected, outside = outcome(t1, t0, "file_open")
    assert summary(events) == [("create", f"{watched}/new{i}/cfg") for i in range(rounds)], (
        f"emitted {emitted}, not_selected {not_selected}, outside {outside} (the cache answered {rounds} times)"
    )
    assert (emitted, not_selected, outside) == (rounds, rounds, rounds)


def test_only_a_move_of_a_directory_moves_the_count(plain_dir: Path) -> None:
    """bpf/moves.bpf.c counts the moves __d_move() makes that involve a
    directory, two for each; a file renamed or two files exchanged leave
    the count alone, so they cost no cache entry a walk. Every kernel the
    suite runs on has __d_move in its BTF."""
    d, e, f, g = plain_dir / "d", plain_dir / "e", plain_dir / "f", plain_dir / "g"
    d.mkdir()
    e.mkdir()
    f.write_bytes(b"")
    g.write_bytes(b"")
    steps: dict[str, Callable[[], object]] = {
        "file renamed": lambda: os.rename(f, plain_dir / "f2"),
        "files exchanged": lambda: renameat2(plain_dir / "f2", g, RENAME_EXCHANGE),
        "directory renamed": lambda: os.rename(d, plain_dir / "d2"),
        "file and directory exchanged": lambda: renameat2(g, plain_dir / "d2", RENAME_EXCHANGE),
        "directory moved into another": lambda: os.rename(g, e / "sub"),  # g is the directory now
    }
    with monitoring(f"{plain_dir}/mon/**") as mon:
        assert mon.agent.plan is not None
        assert mon.agent.plan.moves_traced
        moved = {}
        for name, step in steps.items():
            before = mon.agent.directory_moves()
            run(step)
            after = mon.agent.directory_moves()
            assert before is not None
            assert after is not None
            moved[name] = after - before
    assert moved == {
        "file renamed": 0,
        "files exchanged": 0,
        "directory renamed": 2,
        "file and directory exchanged": 2,
        "directory moved into another": 2,
    }


def test_an_ancestor_moved_while_the_programs_were_detached_retires_the_entry(plain_dir: Path) -> None:
    """While detached, the programs count no move; attach() moves the count
    itself (BpfBackend.attach()), so an entry made before is checked again.
    Here b's parent moved into the monitored tree while detached: without
    that, the entry would still answer for b and the change be missed."""
    change = CHANGES["create"]
    watched, a = plain_dir / "mon", plain_dir / "other" / "a"
    b = a / "b"
    b.mkdir(parents=True)
    watched.mkdir()
    now_b = watched / "a" / "b"
    with monitoring(f"{watched}/**", fresh=True) as mon:

        def moved_while_detached() -> None:
            mon.agent.detach()
            try:
                run(lambda: os.rename(a, watched / "a"))
            finally:
                mon.agent.attach()

        steps = warm_retire_change(mon, change, b, moved_while_detached, now_b / "f4")
        events = mon.under(str(plain_dir))
    assert steps == [WARMED, FROM_CACHE, NOT_SEEN, REPORTED]
    assert summary(events) == [("create", f"{now_b}/f4")]
