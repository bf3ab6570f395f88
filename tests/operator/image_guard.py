"""The test node's image guard: a container's Python code reaches only its image and its pod's volumes.

A local process cannot be given its own root filesystem, so the test node (container.py)
starts a container's Python program through this file instead:
`python [flags] -c BOOTSTRAP <this file's source> <roots as JSON> <-c|-m|script> <code|module|path>
<args...>`
(`guarded_argv` builds it). Run that way, it installs an audit hook (PEP 578,
`sys.addaudithook`) and then runs the container's own program as the interpreter would
have: `-c` code in a fresh `__main__`, `-m` through `runpy.run_module`, a script or a
console script of the venv's bin through `runpy.run_path`; with the same `sys.argv`, the
same `sys.path[0]`, the same exit status (SystemExit and uncaught exceptions leave the one
process as before) and the same signals (no wrapper process: SIGTERM reaches the program).
Nothing is added to the environment: the roots travel in argv.

Enforced, for every path-carrying audit event (Python 3.11's table): `open` (builtins.open,
io.open, os.open, io.open_code, so imports too), os.listdir, os.scandir, os.chdir, os.mkdir,
os.rmdir, os.remove/unlink, os.rename/replace, os.link, os.symlink (the link), os.chmod,
os.chown, os.utime, os.truncate, os.*xattr, shutil.copyfile/copymode/copystat/copytree/
move/chown/rmtree/make_archive/unpack_archive, sqlite3.connect, ctypes.dlopen and
programs started by path (subprocess.Popen, os.exec*, os.posix_spawn, os.spawn*; and a
child's working directory): the path is made absolute (against the cwd or the `dir_fd`),
symlinks resolved, and refused with a one-line PermissionError (EACCES, naming the path)
unless it lies under an allowed root:

- the Python installation that runs the program: `sys.prefix`, `sys.base_prefix`,
  `sys.exec_prefix`, `sys.base_exec_prefix`, `site.getsitepackages()` (so every
  `sys.path` entry of the installed environment);
- the roots the test node passes: the system directories an image has, the installed
  package's own directory, and the container's sandbox (working directory, volumes,
  termination-message file, HOME);
- listing (only) the `sys.path` entries outside the environment, exactly, so that the
  import system finds an editable install's package (`/repo/src` holds `modelengine/`)
  without the rest of that directory becoming readable.

Not enforced: native code opens files without audit events (C/C++ reads in onnxruntime,
TensorRT, torch's C++ side, the dynamic loader); `os.stat`, `os.path.exists`, `os.access`
and `os.readlink` raise no audit event, so a program can still learn that a host path
exists; child processes do not inherit the hook (the programs it starts are checked, not
what they then open); a program that is not Python (a shell, a binary) runs unguarded; and
writes under the allowed image roots are not refused (a read-only root filesystem is not
read-only here).
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import re
import runpy
import site
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

SYSTEM_ROOTS = ("/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys", "/dev", "/opt")
MESSAGE = "outside the image and the pod's volumes (refused by the test node's image guard)"

# event → (index of a path argument, index of its dir_fd argument or -1), one pair per path
_PATHS: dict[str, tuple[tuple[int, int], ...]] = {
    "open": ((0, -1),),
    "os.listdir": ((0, -1),),
    "os.scandir": ((0, -1),),
    "os.chdir": ((0, -1),),
    "os.mkdir": ((0, 2),),
    "os.rmdir": ((0, 1),),
    "os.remove": ((0, 1),),
    "os.rename": ((0, 2), (1, 3)),
    "os.link": ((0, 2), (1, 3)),
    "os.symlink": ((1, 2),),
    "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),),
    "os.utime": ((0, 3),),
    "os.truncate": ((0, -1),),
    "os.chflags": ((0, -1),),
    "os.listxattr": ((0, -1),),
    "os.getxattr": ((0, -1),),
    "os.setxattr": ((0, -1),),
    "os.removexattr": ((0, -1),),
    "shutil.copyfile": ((0, -1), (1, -1)),
    "shutil.copymode": ((0, -1), (1, -1)),
    "shutil.copystat": ((0, -1), (1, -1)),
    "shutil.copytree": ((0, -1), (1, -1)),
    "shutil.move": ((0, -1), (1, -1)),
    "shutil.chown": ((0, -1),),
    "shutil.rmtree": ((0, 1),),
    "shutil.make_archive": ((0, -1), (2, -1)),
    "shutil.unpack_archive": ((0, -1), (1, -1)),
    "subprocess.Popen": ((2, -1),),  # the child's working directory
}
# event → index of a program or library: a path only when it holds a "/" (else PATH/loader search)
_PROGRAMS: dict[str, int] = {
    "subprocess.Popen": 0,
    "os.exec": 0,
    "os.posix_spawn": 0,
    "os.spawn": 1,
    "ctypes.dlopen": 0,
}
_LISTINGS = frozenset({"os.listdir", "os.scandir"})


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root + "/") for root in roots)


def _real(path: str) -> str:
    return os.path.realpath(path).rstrip("/") or "/"


def _absolute(value: object, dir_fd: object) -> str | None:
    """The resolved absolute path an event's argument names (None: not a path, e.g. an fd)."""
    if value is None or isinstance(value, int):
        return None
    try:
        text = os.fsdecode(value)  # type: ignore[arg-type]  # str, bytes, PathLike (DirEntry)
    except TypeError:
        return None
    try:
        if not os.path.isabs(text):
            base = os.getcwd()
            if isinstance(dir_fd, int) and not isinstance(dir_fd, bool) and dir_fd >= 0:
                base = os.readlink(f"/proc/self/fd/{dir_fd}")
            text = os.path.join(base, text)
        return os.path.realpath(text)
    except OSError:
        return None


def make_hook(roots: Sequence[str], listable: Sequence[str]) -> Callable[[str, tuple[Any, ...]], None]:
    """The audit hook refusing every path event outside `roots` (`listable`: listing only)."""
    allowed = tuple(sorted({_real(r) for r in roots}))
    if "/" in allowed:
        raise ValueError("the image guard cannot allow the whole filesystem")
    listings = frozenset(_real(p) for p in listable)

    def refuse(event: str, value: object, path: str) -> None:
        given = os.fsdecode(value)  # type: ignore[arg-type]
        shown = given if os.path.normpath(given) == path else f"{given} (resolved {path})"
        raise PermissionError(errno.EACCES, f"{event}: {MESSAGE}", shown)

    def check(event: str, value: object, dir_fd: object) -> None:
        path = _absolute(value, dir_fd)
        if path is None or _under(path, allowed):
            return
        if event in _LISTINGS and path in listings:
            return
        refuse(event, value, path)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        pairs = _PATHS.get(event)
        if pairs is not None:
            for index, fd_index in pairs:
                if index < len(args):
                    value = args[index]
                    if value is None and event in _LISTINGS:
                        value = "."
                    check(event, value, args[fd_index] if 0 <= fd_index < len(args) else None)
        program = _PROGRAMS.get(event)
        if program is not None and program < len(args):
            value = args[program]
            if isinstance(value, str | bytes) and ("/" in value if isinstance(value, str) else b"/" in value):
                check(event, value, None)
        if event == "sqlite3.connect" and args:
            database = args[0]
            if isinstance(database, bytes):
                database = os.fsdecode(database)
            if database not in ("", ":memory:") and not str(database).startswith("file:"):
                check(event, database, None)

    return hook


def environment_roots() -> tuple[list[str], list[str]]:
    """(the running Python installation's roots, sys.path entries outside it: listing only)."""
    roots = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *site.getsitepackages()]
    real_roots = [_real(r) for r in roots]
    outside = [p for p in sys.path if p and not _under(_real(p), real_roots)]
    return roots, outside


# ---- the test node's side: the argv that runs a container's program under the guard ----

_PYTHON = re.compile(r"python(\d+(\.\d+)*)?")


def _is_python(path: str) -> bool:
    names = {os.path.basename(path), os.path.basename(os.path.realpath(path))}
    return any(_PYTHON.fullmatch(name) for name in names)


def _which(program: str, search_path: str, cwd: str) -> str | None:
    if "/" in program:
        path = os.path.join(cwd, program)
        return path if os.path.isfile(path) else None
    for directory in search_path.split(os.pathsep):
        path = os.path.join(cwd, directory or ".", program)  # a relative PATH entry: from cwd
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def split_python_args(args: Sequence[str]) -> tuple[list[str], str, str, list[str]] | None:
    """A Python command line after the interpreter: (flags, mode, code/module/script, program args).

    None when the interpreter would run no program given here (stdin, REPL, --version, ...).
    """
    flags: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--check-hash-based-pycs" and i + 1 < len(args):
            flags += [token, args[i + 1]]
            i += 2
            continue
        if token == "-" or token.startswith("--"):
            return None
        if not token.startswith("-"):
            return flags, "script", token, list(args[i + 1 :])
        # a group of short options: -u, -uB, -Wignore, -X dev, -c CODE, -umMODULE
        for j in range(1, len(token)):
            letter, rest = token[j], token[j + 1 :]
            if letter in "cm":
                if j > 1:
                    flags.append(token[:j])
                if rest:
                    return flags, f"-{letter}", rest, list(args[i + 1 :])
                if i + 1 >= len(args):
                    return None
                return flags, f"-{letter}", args[i + 1], list(args[i + 2 :])
            if letter in "hV?":
                return None
            if letter in "WX":
                flags.append(token)
                if not rest:
                    if i + 1 >= len(args):
                        return None
                    i += 1
                    flags.append(args[i])
                break
        else:
            flags.append(token)
        i += 1
    return None


def _shebang(path: str) -> list[str] | None:
    try:
        with open(path, "rb") as file:
            line = file.readline(512)
    except OSError:
        return None
    if not line.startswith(b"#!"):
        return None
    words = line[2:].decode(errors="replace").strip().split(None, 1)
    return words or None


def guarded_argv(argv: Sequence[str], *, roots: Sequence[str], search_path: str, cwd: str) -> list[str]:
    """The argv that runs `argv`'s Python program under the guard (`argv` itself when not Python).

    `search_path` is the container's PATH and `cwd` its working directory, as exec would
    use them to find the program.
    """
    config = json.dumps({"roots": list(roots)})
    program = _which(argv[0], search_path, cwd)
    if program is None:
        return list(argv)
    if _is_python(program):
        split = split_python_args(argv[1:])
        if split is None:
            return list(argv)
        flags, mode, target, rest = split
        return [argv[0], *flags, "-c", BOOTSTRAP, source(), config, mode, target, *rest]
    interpreter = _shebang(program)
    if interpreter is None:
        return list(argv)
    first = interpreter[0]
    named = interpreter[1].split()[0] if os.path.basename(first) == "env" and len(interpreter) > 1 else first
    if not _is_python(named):
        return list(argv)
    return [*interpreter, "-c", BOOTSTRAP, source(), config, "script", program, *argv[1:]]


# what `-c` runs: this file's text (the next argument), under a name its traceback lines show
BOOTSTRAP = "import sys; exec(compile(sys.argv.pop(1), '<test node image guard>', 'exec'))"


def source() -> str:
    """This file's text, run by the container's interpreter through BOOTSTRAP."""
    with open(__file__, encoding="utf-8") as file:
        return file.read()


# ---- the container's side: install the hook, then run the program ----


def main(argv: list[str]) -> None:
    config, mode, target, args = json.loads(argv[0]), argv[1], argv[2], argv[3:]
    image, outside = environment_roots()
    sys.addaudithook(make_hook([*image, *config["roots"]], outside))
    if mode == "-c":
        sys.argv = ["-c", *args]
        module = types.ModuleType("__main__")
        module.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = module
        exec(compile(target, "<string>", "exec", dont_inherit=True), module.__dict__)
    elif mode == "-m":
        sys.argv = ["-m", *args]
        if sys.path and sys.path[0] == "":
            sys.path[0] = os.getcwd()
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv = [target, *args]
        if sys.path and sys.path[0] == "":
            sys.path[0] = os.path.dirname(os.path.realpath(target))
        runpy.run_path(target, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
