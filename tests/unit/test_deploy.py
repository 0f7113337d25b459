"""The deployment files (packaging/Containerfile, packaging/kubernetes/):
what they promise, read as a container engine and Kubernetes read them,
and their configuration through filewarden's own loader."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import msgspec
import yaml

from filewarden import __version__, config

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "packaging" / "Containerfile"
MANIFEST = ROOT / "packaging" / "kubernetes" / "daemonset.yaml"


def instructions() -> list[tuple[str, str]]:
    """The Containerfile's instructions: (KEYWORD, arguments), continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in CONTAINERFILE.read_text().splitlines():
        text = raw.strip()
        if not pending and (not text or text.startswith("#")):
            continue
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        keyword, _, args = (pending + text).partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending
    return out


def documents() -> dict[str, dict[str, Any]]:
    with MANIFEST.open() as f:
        return {doc["kind"]: doc for doc in yaml.safe_load_all(f)}


def entrypoint() -> list[str]:
    (args,) = [a for k, a in instructions() if k == "ENTRYPOINT"]
    argv = json.loads(args)  # the exec form: no shell between the runtime and the agent (SIGTERM reaches it)
    assert isinstance(argv, list)
    return argv


def test_the_image_installs_the_wheel_on_bookworm_and_runs_the_agent() -> None:
    steps = instructions()
    assert steps[0][0] == "FROM"
    assert steps[0][1].startswith("docker.io/library/python:3.11")
    assert steps[0][1].endswith("-bookworm")
    runs = [shlex.split(a) for k, a in steps if k == "RUN"]
    assert any("apt-get" in r and "install" in r and "libbpf1" in r for r in runs)
    (copy,) = [a for k, a in steps if k == "COPY"]
    source, dest = copy.split()
    # What `python -m build` names the wheel (tests/e2e/test_wheel.py builds it).
    assert Path(f"filewarden-{__version__}-py3-none-linux_x86_64.whl").match(Path(source).name)
    assert source.startswith("dist/")
    assert any(r[:4] == ["python", "-m", "pip", "install"] and f"{dest}filewarden-*.whl" in r for r in runs)
    assert entrypoint() == ["filewarden", "run", "--config", "/etc/filewarden/filewarden.toml"]
    assert not [k for k, _ in steps if k == "CMD"]


def test_the_daemonset_is_privileged_in_the_hosts_pid_namespace() -> None:
    pod = documents()["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert "hostNetwork" not in pod  # the metrics stay off the node's network
    (container,) = pod["containers"]
    assert container["securityContext"]["privileged"] is True
    assert container["image"] == f"filewarden:{__version__}"
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}


def test_the_daemonset_mounts_what_the_agent_needs() -> None:
    pod = documents()["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {
        volumes[m["name"]]["hostPath"]["path"]: (m["mountPath"], m.get("readOnly", False))
        for m in container["volumeMounts"]
        if "hostPath" in volumes[m["name"]]
    }
    assert mounts == {
        "/sys/kernel/btf": ("/sys/kernel/btf", True),
        "/sys/fs/bpf": ("/sys/fs/bpf", True),
        "/proc": ("/host/proc", True),
        "/": ("/host", True),
        "/var/lib/filewarden": ("/var/lib/filewarden", False),  # the state: written
    }


def test_the_config_map_is_where_the_entrypoint_reads_and_loads(tmp_path: Path) -> None:
    docs = documents()
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (config_mount,) = [m for m in container["volumeMounts"] if "configMap" in volumes[m["name"]]]
    assert config_mount["readOnly"] is True
    config_map = docs["ConfigMap"]
    assert volumes[config_mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["metadata"]["namespace"] == docs["DaemonSet"]["metadata"]["namespace"]
    (key,) = config_map["data"]
    argv = entrypoint()
    assert argv[argv.index("--config") + 1] == f"{config_mount['mountPath']}/{key}"
    path = tmp_path / key
    path.write_text(config_map["data"][key])
    # host_root must name a directory that exists: the pod's /host, which
    # this machine need not have; the file's value is checked below.
    loaded = config.load(path, host_root=str(tmp_path))
    assert loaded.state_dir == Path("/var/lib/filewarden")
    assert [o.kind for o in loaded.outputs] == ["jsonl", "otlp"]
    # The probe reaches the pod's address: the metrics must not bind loopback only.
    host, _, port = loaded.metrics_address.rpartition(":")
    assert host == "0.0.0.0"  # noqa: S104 - the manifest's address, read, not bound
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    (named,) = [p for p in container["ports"] if p["name"] == probe["port"]]
    assert named["containerPort"] == int(port)


def test_the_baseline_reads_the_host_through_the_mounted_host_root(tmp_path: Path) -> None:
    """README: the ConfigMap sets host_root to where the host's / is
    mounted, and keeps the baseline on (it reads the host's files, not the
    image's)."""
    docs = documents()
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (host_root,) = [m for m in container["volumeMounts"] if volumes[m["name"]].get("hostPath", {}).get("path") == "/"]
    assert host_root["readOnly"] is True
    (key,) = docs["ConfigMap"]["data"]
    text = docs["ConfigMap"]["data"][key]
    path = tmp_path / key
    path.write_text(text)
    file = config.read_file(path)
    assert file.host_root == host_root["mountPath"] == "/host"
    assert file.baseline is msgspec.UNSET  # on, as by default: no `baseline = false`
    mounted = tmp_path / "host"  # the pod's /host, here
    (mounted / "etc").mkdir(parents=True)
    loaded = config.load(path, host_root=str(mounted))
    assert loaded.baseline is True
    assert loaded.host_root.real(b"/etc/passwd") == os.fsencode(mounted / "etc/passwd")


def test_records_name_the_node() -> None:
    """OTEL_RESOURCE_ATTRIBUTES gives the otlp output the node's name as
    host.name (tests/unit/pipeline/test_otlp.py: it overrides the pod's)."""
    (container,) = documents()["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    names = [e["name"] for e in container["env"]]
    assert names.index("NODE_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")  # $(NODE_NAME) needs it defined first
    assert "host.name=$(NODE_NAME)" in env["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(",")
