from __future__ import annotations

import pytest

from filewarden import globs


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [
        ("/etc/**", b"/etc/"),
        ("/usr/bin/*", b"/usr/bin/"),
        ("/etc/passwd", b"/etc/passwd"),
        ("/home/*/.ssh/**", b"/home/"),
        ("/var/log/app?.log", b"/var/log/app"),
        ("/srv/[ab]/x", b"/srv/"),
        ("/data/a\\*b/**", b"/data/a*b/"),
        ("/caf\u00e9/**", "/caf\u00e9/".encode()),
    ],
)
def test_literal_prefix(pattern: str, prefix: bytes) -> None:
    assert globs.parse(pattern).prefix == prefix


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/etc/**", b"/etc/passwd", True),
        ("/etc/**", b"/etc/ssh/sshd_config", True),
        ("/etc/**", b"/etc", False),
        ("/etc/**", b"/etcx/passwd", False),
        ("/etc/*", b"/etc/passwd", True),
        ("/etc/*", b"/etc/ssh/sshd_config", False),
        ("/a/**/b", b"/a/b", True),
        ("/a/**/b", b"/a/x/y/b", True),
        ("/a/**/b", b"/a/x/yb", False),
        ("/var/log/app?.log", b"/var/log/app1.log", True),
        ("/var/log/app?.log", b"/var/log/app/.log", False),
        ("/srv/[ab]/x", b"/srv/a/x", True),
        ("/srv/[!ab]/x", b"/srv/a/x", False),
        ("/srv/[!ab]/x", b"/srv/c/x", True),
        ("/srv/[!ab]/x", b"/srv///x", False),
        ("/srv/[a-c]*", b"/srv/beta", True),
        ("/data/a\\*b", b"/data/a*b", True),
        ("/data/a\\*b", b"/data/axb", False),
        ("/x/*.conf", b"/x/a.b.conf", True),
        ("/x/**", b"/x/line\nbreak", True),
        ("/x/**", b"/x/\xff\xfe", True),
        ("/x/\udcff", b"/x/\xff", True),
    ],
)
def test_match(pattern: str, path: bytes, matches: bool) -> None:
    assert globs.parse(pattern).match(path) is matches
    assert globs.PathMatcher([pattern]).matches(path) is matches


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty glob"),
        ("etc/**", "is not an absolute path"),
        ("/etc/[abc", "never closed"),
        ("/etc/a**", "must be a whole path segment"),
        ("/etc/**b/c", "must be a whole path segment"),
        ("/etc/x\\", "lone backslash"),
    ],
)
def test_bad_globs_are_refused_with_a_reason(pattern: str, message: str) -> None:
    with pytest.raises(globs.GlobError, match=message):
        globs.parse(pattern)


def test_matcher_prefixes_are_distinct_and_shortest_first() -> None:
    m = globs.PathMatcher(["/etc/**", "/etc/ssh/*", "/etc/**", "/usr/bin/*"])
    assert m.prefixes() == [b"/etc/", b"/etc/ssh/", b"/usr/bin/"]
    assert len(m.globs) == 3
    assert m.which(b"/etc/ssh/x") is not None
    assert m.which(b"/etc/ssh/x").pattern == "/etc/**"


def test_matcher_needs_a_glob() -> None:
    with pytest.raises(globs.GlobError, match="no paths"):
        globs.PathMatcher([])


def test_exclusions_win_over_every_glob() -> None:
    m = globs.PathMatcher(["/etc/**", "/srv/*.conf"], ["**/*.swp", "/etc/mtab", "/etc/cache/**", "*~"])
    assert m.matches(b"/etc/passwd")
    assert not m.matches(b"/etc/ssh/.sshd_config.swp")
    assert not m.matches(b"/srv/a.conf~")
    assert not m.matches(b"/etc/mtab")
    assert m.matches(b"/etc/mtab2")  # the literal exclusion names that file only
    assert not m.matches(b"/etc/cache/x/y")
    assert m.matches(b"/etc/cache")  # "/**" is what is below it
    assert m.excluded(b"/etc/x.swp") == m.excludes[0]
    assert m.excluded(b"/etc/x.swp").pattern == "**/*.swp"  # type: ignore[union-attr]
    assert m.excluded(b"/etc/passwd") is None
    assert not m.may_hold(b"/etc/cache")
    assert not m.may_hold(b"/etc/cache/deeper")
    assert m.may_hold(b"/etc/cachex")


def test_only_literal_exclusions_go_to_the_kernel() -> None:
    excludes = ["/etc/mtab", "/var/cache/**", "*.swp", "/etc/*.bak", "/home/*/x/**", r"/etc/a\*b"]
    m = globs.PathMatcher(["/etc/**"], excludes)
    assert m.kernel_exclusions() == [b"/etc/mtab\0", b"/var/cache/"]


@pytest.mark.parametrize("pattern", ["", "/etc/[", "a/**b"])
def test_bad_exclusions_are_refused(pattern: str) -> None:
    with pytest.raises(globs.GlobError):
        globs.PathMatcher(["/etc/**"], [pattern])
