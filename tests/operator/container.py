"""One container, started the way a kubelet starts it, as a local process.

What the process gets is what the pod spec gives it and nothing of the test's own:

- a fresh, empty sandbox directory per container: the working directory (`workingDir` on
  a volume; any other `workingDir` is an empty directory of the sandbox standing for that
  path of the image, `rootfs/<path>`; else the sandbox's own empty `work/`), one fresh
  directory per `emptyDir` volume, a file for the termination message;
- ONLY the container's `command` + `args` (with kubelet's `$(VAR)` expansion) and an
  environment built from `env` (values, `secretKeyRef`, `configMapKeyRef`, `fieldRef`
  of the pod's name/namespace) and `envFrom` (Secrets and ConfigMaps read from the API,
  base64-decoded, with `prefix`; a missing non-optional one is kubelet's
  `CreateContainerConfigError` and the container does not start), plus what the image
  holds: `PATH` (the installed package's bin directory first: the image holds the
  installed package), `LANG=C.UTF-8` (as the python images set it) and `HOME` when
  `env` does not set one. Nothing else of the test
  process's environment (no PYTHONPATH, no AWS_* credentials, no VIRTUAL_ENV) leaks in.

A local process cannot be given its own root filesystem, so paths are *rewritten*, the
way a volume mount maps them: every `command`/`args`/`env` value that starts with a
volume's `mountPath` (or is the `terminationMessagePath`) is rewritten to the host
directory (file) that stands for it, longest mount first; a volume mounted at `/tmp` also
sets `TMPDIR` to its directory, since the process's own `/tmp` is the host's. Ports are
mapped like `docker -p`: each `containerPort` gets a free loopback port, and a `command`/
`args`/`env` value equal to the container port (`8000`, or `--flag=8000`) is rewritten to
it; `host_port()` tells the test where to connect.

What is enforced: the container's Python code reaches only the image and the pod's
volumes. A Python program (`python3 -c ...`, `python3 -m ...`, `python3 script.py`, or a
console script such as the venv's `modelengine`) is started through
tests/operator/image_guard.py, which installs an audit hook before the program runs and
then runs it in the same process (same argv, exit code, signals). Every `open` (so every
import too), listing, chdir, mkdir, remove, rename, link, chmod, shutil copy/move/rmtree
and archive of a path outside the allowed roots fails with a one-line PermissionError
naming the path (symlinks resolved). Allowed: what the image holds (the Python
installation and venv; the installed `modelengine` package's own directory, not the
repository an editable install points into, so no tests/ or examples/; /usr, /lib, /lib64,
/bin, /sbin, /etc, /proc, /sys, /dev, /opt; and, per image, what `start(image_holds=...)`
says a custom image has baked in) and what the pod maps (its working directory, every
volume's directory, the termination-message file, HOME). The test's own tmp_path, this
repository, the user's cwd and the host's /tmp are not there: a path only the test machine
has fails in the container as it would in a cluster.

What still is not enforced: reads by native code (onnxruntime's, TensorRT's and torch's
C++, the dynamic loader) raise no audit event; `os.stat`/`os.path.exists` raise none either,
so a host path's existence can be learned; child processes run without the hook; a program
that is not Python runs unguarded; and a read-only root filesystem is not read-only here
(writes under the image's roots, e.g. /dev or the venv, are not refused).
"""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import modelengine
from tests.operator import image_guard

IMAGE_PATH = os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])
# What the image holds besides the Python installation (which the guard finds itself): the
# system's directories and the installed package — its own directory, not the repository
# an editable install points into (no tests/, no examples/).
IMAGE_ROOTS = (*image_guard.SYSTEM_ROOTS, str(Path(modelengine.__file__).resolve().parent))

# (kind, namespace, name) → the object's `data` (base64 values) or None when missing
ReadData = Callable[[str, str, str], dict[str, str] | None]


class ContainerConfigError(Exception):
    """What kubelet reports as CreateContainerConfigError (the container is not started)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sandbox:
    root: Path
    mounts: dict[str, Path] = field(default_factory=dict)  # mountPath → host directory
    termination_path: str = "/dev/termination-log"
    ports: dict[int, int] = field(default_factory=dict)  # containerPort → loopback port

    @property
    def termination_log(self) -> Path:
        return self.root / "termination-log"

    @property
    def home(self) -> Path:
        return self.root / "home"

    def workdir(self, container: dict[str, Any]) -> Path:
        """`workingDir` on a volume, else in the sandbox's own root filesystem (`rootfs/`),
        else the sandbox's empty `work/`."""
        working_dir: str = container.get("workingDir") or ""
        if not working_dir:
            return self.root / "work"
        mapped = self.rewrite_path(working_dir)
        if mapped != working_dir:
            return Path(mapped)
        return self.root / "rootfs" / working_dir.lstrip("/")

    def allowed_roots(self, workdir: Path) -> list[str]:
        """What the pod gives the process: its working directory, volumes, termination file, HOME."""
        return [str(workdir), *map(str, self.mounts.values()), str(self.termination_log), str(self.home)]

    def rewrite_path(self, value: str) -> str:
        if value == self.termination_path:
            return str(self.termination_log)
        for mount in sorted(self.mounts, key=len, reverse=True):
            if value == mount or value.startswith(mount.rstrip("/") + "/"):
                return str(self.mounts[mount]) + value[len(mount.rstrip("/")) :]
        return value

    def rewrite(self, value: str) -> str:
        """A command/args/env value as the process on this host must see it."""
        flag, eq, rest = value.partition("=")
        if eq and flag.startswith("-"):
            return f"{flag}={self.rewrite(rest)}"
        if value.isdigit() and int(value) in self.ports:
            return str(self.ports[int(value)])
        return self.rewrite_path(value)


def prepare(root: Path, pod_spec: dict[str, Any], container: dict[str, Any]) -> Sandbox:
    """The sandbox of one container: empty work dir, emptyDirs, termination file, ports."""
    sandbox = Sandbox(
        root=root, termination_path=container.get("terminationMessagePath", "/dev/termination-log")
    )
    (root / "work").mkdir(parents=True)
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"], {})
        if "emptyDir" not in volume:
            raise ContainerConfigError(
                f"volume {mount['name']!r}: only emptyDir volumes run on the test node"
            )
        host = root / "volumes" / mount["name"]
        host.mkdir(parents=True, exist_ok=True)
        sandbox.mounts[mount["mountPath"]] = host
    for port in container.get("ports") or []:
        sandbox.ports[int(port["containerPort"])] = free_port()
    return sandbox


def _decoded(data: dict[str, str] | None, kind: str) -> dict[str, str] | None:
    if data is None:
        return None
    if kind == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in data.items()}
    return dict(data)


def resolve_env(
    *, container: dict[str, Any], pod_meta: dict[str, Any], namespace: str, read: ReadData
) -> dict[str, str]:
    """The container's variables as kubelet resolves them (envFrom first, then env in order)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        for key, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
            ref = source.get(key)
            if ref is None:
                continue
            data = _decoded(read(kind, namespace, ref["name"]), kind)
            if data is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'{kind.lower()} "{ref["name"]}" not found')
            for k, v in data.items():
                env[source.get("prefix", "") + k] = v
    for item in container.get("env") or []:
        if "value" in item or "valueFrom" not in item:
            env[item["name"]] = expand(item.get("value", ""), env)
            continue
        source = item["valueFrom"]
        for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            ref = source.get(key)
            if ref is None:
                continue
            data = _decoded(read(kind, namespace, ref["name"]), kind) or {}
            if ref["key"] in data:
                env[item["name"]] = data[ref["key"]]
            elif not ref.get("optional"):
                raise ContainerConfigError(
                    f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}"
                )
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            values = {"metadata.name": pod_meta.get("name", ""), "metadata.namespace": namespace}
            env[item["name"]] = values.get(path, "")
    return env


def expand(value: str, env: dict[str, str]) -> str:
    """kubelet's `$(VAR)` expansion (`$$(VAR)` escapes; unknown references stay as written)."""

    def one(match: re.Match[str]) -> str:
        if match.group(0).startswith("$$"):
            return match.group(0)[1:]
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$?\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, value)


@dataclass
class Started:
    process: subprocess.Popen[bytes]
    sandbox: Sandbox
    log_path: Path


def start(
    *, sandbox: Sandbox, container: dict[str, Any], env: dict[str, str], image_holds: Sequence[str] = ()
) -> Started:
    """Start the container's process: its command + args only, its environment only.

    `image_holds`: what the container's image has besides the installed package (a custom
    image's baked-in files, at the same absolute paths), readable by the process.
    """
    process_env = {"PATH": IMAGE_PATH, "LANG": "C.UTF-8", "HOME": str(sandbox.home)}
    sandbox.home.mkdir(exist_ok=True)
    for mount, host in sandbox.mounts.items():
        if mount.rstrip("/") == "/tmp":
            process_env["TMPDIR"] = str(host)
    process_env.update({k: sandbox.rewrite(v) for k, v in env.items()})
    argv = [expand(a, env) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    if not argv:
        raise ContainerConfigError("no command: the test node cannot run an image's ENTRYPOINT")
    argv = [sandbox.rewrite(a) for a in argv]
    workdir = sandbox.workdir(container)
    workdir.mkdir(parents=True, exist_ok=True)
    argv = image_guard.guarded_argv(
        argv,
        roots=[*IMAGE_ROOTS, *image_holds, *sandbox.allowed_roots(workdir)],
        search_path=process_env["PATH"],
        cwd=str(workdir),
    )
    log_path = sandbox.root / "container.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, env=process_env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Started(process, sandbox, log_path)


def termination_message(started: Started, policy: str, exit_code: int) -> str:
    """What kubelet reports: the termination file, or the log tail on error when asked to."""
    path = started.sandbox.termination_log
    message = path.read_text(errors="replace")[:4096] if path.exists() else ""
    if not message and policy == "FallbackToLogsOnError" and exit_code != 0:
        lines = started.log_path.read_text(errors="replace").splitlines()[-80:]
        message = "\n".join(lines)[-2048:]
    return message
