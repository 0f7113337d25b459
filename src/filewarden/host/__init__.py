"""Lookups on the host this agent runs on, each in one module.

Owns: `libc` (the one place for ctypes outside `_libbpf/`), `mountinfo`
(the one mountinfo parser), `proctree` (processes from /proc and from the
backends' reports), `cgroups` (cgroup id -> container), `overlayfs`
(overlay mounts, their layers and users), `layers` (the overlay
layers the agent follows, and tampering with them), `proc_connector` (the kernel's
process events, over netlink), `sysinfo` (capabilities, LSMs, BTF),
`clock` (kernel boot time -> wall time), `kmod` (loading kernel modules),
`root` (the host root: where a host path is read from inside a container).
Every lookup takes an injectable root (`/proc`, `/sys`) so tests point it
at a fixture tree.

Must not import: backends, pipeline, service, _libbpf.
"""
