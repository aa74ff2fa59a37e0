"""The data directory is its owner's only: created 0700 / 0600, a looser home of ours tightened,
anything else refused with a clear error and left as it was (real files in tmp_path)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dul.errors import ConfigError
from dul.home import Home, open_private, private_file, write_private


def loosen(path: Path, bits: int) -> None:
    os.chmod(path, bits)  # the looser state under test


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A process that did not set the private umask (e.g. a library user)."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_a_fresh_home_is_private_throughout(tmp_path: Path, loose_umask: None) -> None:
    home = Home(tmp_path / "new" / "home").ensure()
    for path in (home.root, home.chain_dir, home.keys_dir, home.run_dir, home.logs_dir):
        assert mode(path) == 0o700, path


def test_a_looser_home_of_ours_is_tightened_files_and_all(
    tmp_path: Path, loose_umask: None
) -> None:
    root = tmp_path / "home"
    (root / "gateway").mkdir(parents=True)
    (root / "logs").mkdir()
    loosen(root, 0o755)
    loosen(root / "gateway", 0o777)
    store = root / "gateway" / "gateway.db"
    store.write_bytes(b"sqlite")
    loosen(store, 0o666)
    script = root / "logs" / "tool"
    script.write_text("#!/bin/sh\n")
    loosen(script, 0o755)
    Home(root).ensure()
    assert mode(root) == 0o700
    assert mode(root / "gateway") == 0o700
    assert mode(store) == 0o600
    assert mode(script) == 0o700  # the owner keeps what it had; others lose everything
    assert store.read_bytes() == b"sqlite"


def test_a_loose_directory_that_is_not_a_home_is_refused_and_untouched(
    tmp_path: Path, loose_umask: None
) -> None:
    root = tmp_path / "documents"
    root.mkdir()
    loosen(root, 0o755)
    letter = root / "letter.txt"
    letter.write_text("dear")
    loosen(letter, 0o644)
    with pytest.raises(ConfigError) as exc:
        Home(root).ensure()
    assert exc.value.code == "home_not_private"
    assert str(root) in exc.value.message
    assert "not a Data-Use Ledger's" in exc.value.message
    assert mode(root) == 0o755
    assert mode(letter) == 0o644
    assert not (root / "chain").exists()


def test_a_home_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "home"
    root.mkdir()
    loosen(root, 0o755)
    owner = os.stat(root).st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(ConfigError) as exc:
        Home(root).ensure()
    assert exc.value.code == "home_not_private"
    assert f"belongs to user id {owner}" in exc.value.message
    assert mode(root) == 0o755


def test_a_file_of_another_user_inside_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Home(tmp_path / "home").ensure()
    stranger = home.run_dir / "planted.pid"
    stranger.write_text("1\n")
    me = os.geteuid()
    real_lstat = os.lstat

    def lstat(path: str | os.PathLike[str]) -> os.stat_result:
        info = real_lstat(path)
        if Path(path) == stranger:
            fields = list(info)
            fields[stat.ST_UID] = me + 1
            return os.stat_result(fields)
        return info

    loosen(home.root, 0o755)
    monkeypatch.setattr(os, "lstat", lstat)
    with pytest.raises(ConfigError) as exc:
        home.ensure()
    assert "planted.pid" in exc.value.message


def test_a_file_instead_of_a_directory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "home"
    root.write_text("")
    with pytest.raises(ConfigError) as exc:
        Home(root).ensure()
    assert "is not a directory" in exc.value.message


def test_files_are_written_private_whatever_the_umask(tmp_path: Path, loose_umask: None) -> None:
    manifest = tmp_path / "deployment.json"
    manifest.write_text("old")
    loosen(manifest, 0o644)
    write_private(manifest, "new")
    assert (manifest.read_text(), mode(manifest)) == ("new", 0o600)
    database = private_file(tmp_path / "store.db")
    assert mode(database) == 0o600
    with open_private(tmp_path / "service.log") as out:
        out.write(b"line\n")
    assert mode(tmp_path / "service.log") == 0o600


def test_the_cli_sets_a_private_umask(tmp_path: Path) -> None:
    """`dul …` (and every service it starts) creates files for its owner only."""
    env = {**os.environ, "DUL_HOME": str(tmp_path / "home")}
    code = (
        "import os; from typer.testing import CliRunner; from dul.cli.main import app; "
        "os.umask(0o022); CliRunner().invoke(app, ['keys', 'list']); "
        "print(oct(os.umask(0o022)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "0o77"
    assert mode(tmp_path / "home") == 0o700
