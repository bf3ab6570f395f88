"""`file://` store: a directory tree. Writes go to a temporary name and are renamed into
place (atomic on POSIX), so a reader never sees a partial object, as with S3."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from modelengine.store.base import NotFound, StoreError

WriteFn = Callable[[BinaryIO], object]


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise StoreError(f"invalid store key {key!r}")
        return self.root / key

    def url_for(self, key: str) -> str:
        return self._path(key).as_uri()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"{self.url_for(key)} does not exist") from None

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{self.url_for(key)} does not exist") from None
        except OSError as err:
            raise StoreError(f"cannot read {self.url_for(key)}: {err.strerror}") from None

    def _atomic_write(self, key: str, write: WriteFn) -> None:
        dest = self._path(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
            try:
                # mkstemp makes the file 0600; a store shared through a volume is read by
                # other users (runtime pods): the mode a plain open() would have given.
                os.fchmod(fd, _FILE_MODE)
                with os.fdopen(fd, "wb") as fh:
                    write(fh)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as err:
            raise StoreError(f"cannot write {self.url_for(key)}: {err.strerror}") from None

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(key, lambda fh: fh.write(data))

    def put_file(self, key: str, src: Path) -> None:
        def copy(fh: BinaryIO) -> None:
            with open(src, "rb") as inp:
                shutil.copyfileobj(inp, fh, 1 << 20)

        self._atomic_write(key, copy)

    def get_file(self, key: str, dest: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise NotFound(f"{self.url_for(key)} does not exist")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if base.is_file():
            yield prefix
            return
        if not base.is_dir():
            return
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith(".tmp-"):
                yield path.relative_to(self.root).as_posix()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
