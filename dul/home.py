"""The data directory: every piece of local state lives under one `DUL_HOME`.

Two stacks with different homes never share a file, and a reset is one `rm -r`.

Everything in it is its owner's only: the directory and its subdirectories are 0700, files 0600
(stores and their -wal/-shm files, chain state, logs, pid files, manifests, tokens). That is set
at the source — `private_umask()` where the CLI and the services start, explicit modes where
files are written (`write_private`, `open_private`, `private_file`) — and `Home.ensure` tightens
a home that was left looser (or refuses one that is not this user's).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from dul.errors import ConfigError

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600

_OURS = frozenset({"chain", "keys", "run", "logs", "gateway", "audit", "deployment.json"})
"""Entries that mark a directory as a Data-Use Ledger home (`ensure` creates the first four)."""


def default_home() -> Path:
    return Path(os.environ.get("DUL_HOME", Path.home() / ".dul")).expanduser()


def private_umask() -> None:
    """Whatever this process (and its children) creates is its owner's only."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """`path` (and missing parents) as a directory; `path` itself 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """`path` exists and is 0600 (e.g. before SQLite opens it: its -wal and -shm files take
    the database file's mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, 0600 from its first byte (written aside, then renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), FILE_MODE)
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def open_private(path: Path, mode: Literal["ab", "wb"] = "ab") -> IO[bytes]:
    """`path` opened for appending (or truncated), created 0600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "ab" else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return os.fdopen(fd, mode)


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def from_env(cls) -> Home:
        return cls(default_home())

    @property
    def chain_dir(self) -> Path:
        return self.root / "chain"

    @property
    def chain_state(self) -> Path:
        return self.chain_dir / "state.json"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def deployment(self) -> Path:
        return self.root / "deployment.json"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def ensure(self) -> Home:
        """Create the home (0700 throughout), or check and tighten an existing one: another
        user's home, or a looser directory that is not a Data-Use Ledger home, is refused
        (`ConfigError` code `home_not_private`) and nothing in it is touched."""
        if self.root.exists():
            self._claim()
        for path in (self.root, self.chain_dir, self.keys_dir, self.run_dir, self.logs_dir):
            private_dir(path)
        return self

    def _refuse(self, why: str) -> ConfigError:
        return ConfigError(
            f"DUL_HOME {self.root} {why}; point DUL_HOME at a new or empty directory",
            code="home_not_private",
        )

    def _claim(self) -> None:
        info = os.stat(self.root)
        if not stat.S_ISDIR(info.st_mode):
            raise self._refuse("is not a directory")
        me = os.geteuid()
        if info.st_uid != me:
            raise self._refuse(f"belongs to user id {info.st_uid}, not to you ({me})")
        entries = set(os.listdir(self.root))
        if entries and not entries & _OURS:
            if info.st_mode & 0o077:
                mode = stat.S_IMODE(info.st_mode)
                raise self._refuse(
                    f"(mode {mode:o}) is readable by others and holds files that are not a "
                    "Data-Use Ledger's, so it is not tightened"
                )
            return  # private already, and not ours to rearrange
        self._tighten(me)

    def _tighten(self, me: int) -> None:
        """Every directory 0700 and every file without group or other bits; an entry of
        another user is refused (nothing after it is changed)."""
        for top, _, files in os.walk(self.root):  # each directory comes once as `top`
            for name in (top, *(os.path.join(top, f) for f in files)):
                try:
                    info = os.lstat(name)
                    if stat.S_ISLNK(info.st_mode):
                        continue  # its target is not ours to judge
                    if info.st_uid != me:
                        raise self._refuse(f"holds {name}, which belongs to user id {info.st_uid}")
                    mode = stat.S_IMODE(info.st_mode)
                    wanted = DIR_MODE if stat.S_ISDIR(info.st_mode) else mode & 0o700
                    if mode != wanted:
                        os.chmod(name, wanted)
                except FileNotFoundError:
                    continue  # removed meanwhile by a running service
