"""Keystores and `dul keys`: encrypted at rest, 600 files, clear errors, no key ever shown."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from eth_account import Account
from eth_typing import HexStr
from structlog.testing import capture_logs
from typer.testing import CliRunner

from dul.cli.main import app
from dul.errors import ConfigError, KeyStoreError
from dul.home import Home
from dul.keys import KeyStore, passphrase_from_env, scrypt_n_from_env, validate_name

FAST_N = "16384"  # 2**14: keeps scrypt at a few ms; real keystores default to 2**18
PASSPHRASE = "correct horse battery staple"
# A well-known test key (eth-account docs); never a real one.
ROOT = Path(__file__).resolve().parents[2]
KNOWN_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
KNOWN_ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DUL_KEY_SCRYPT_N", FAST_N)
    monkeypatch.setenv("DUL_KEY_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("DUL_KEY_PASSPHRASE_FILE", raising=False)
    KeyStore.forget_unlocked()
    yield
    KeyStore.forget_unlocked()
    structlog.reset_defaults()  # the CLI binds logging to the runner's (closed) stderr


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "dul").ensure()


@pytest.fixture
def store(home: Home) -> KeyStore:
    return KeyStore(home)


def _code(exc: pytest.ExceptionInfo[KeyStoreError]) -> str:
    return exc.value.code


def test_new_key_round_trip(store: KeyStore, home: Home) -> None:
    address = store.new("alice")
    path = home.keys_dir / "alice.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.keys_dir.stat().st_mode) == 0o700
    data = json.loads(path.read_text())
    assert data["crypto"]["kdf"] == "scrypt"
    assert data["crypto"]["kdfparams"]["n"] == int(FAST_N)
    assert store.list() == [("alice", address)]
    assert store.show("alice") == ("alice", address, path)
    signer = store.unlock("alice")
    assert signer.address == address
    assert Account.from_key(Account.decrypt(data, PASSPHRASE)).address == address
    assert not list(home.keys_dir.glob(".*.tmp"))


def test_unlock_is_cached_per_process(store: KeyStore) -> None:
    store.new("alice")
    assert store.unlock("alice") is store.unlock("alice")


def test_cached_key_still_needs_the_right_passphrase(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.new("alice")
    store.unlock("alice")
    monkeypatch.setenv("DUL_KEY_PASSPHRASE", "guess")
    with pytest.raises(KeyStoreError) as err:
        store.unlock("alice")
    assert _code(err) == "wrong_passphrase"


def test_import_known_key(store: KeyStore) -> None:
    assert store.import_key("k1", KNOWN_KEY) == KNOWN_ADDRESS
    assert store.import_key("k2", KNOWN_KEY.removeprefix("0x") + "\n") == KNOWN_ADDRESS
    assert store.import_key("k3", bytes.fromhex(KNOWN_KEY[2:])) == KNOWN_ADDRESS
    assert store.unlock("k1").address == KNOWN_ADDRESS


@pytest.mark.parametrize("bad", ["", "0x1234", "zz" * 32, "0x" + "00" * 32, "0x" + "ff" * 32])
def test_import_refuses_bad_keys_without_echoing_them(store: KeyStore, bad: str) -> None:
    with pytest.raises(KeyStoreError) as err:
        store.import_key("k", bad)
    assert _code(err) == "invalid_private_key"
    assert bad.removeprefix("0x") not in str(err.value) or not bad.removeprefix("0x")
    assert store.list() == []


def test_existing_name_is_refused(store: KeyStore) -> None:
    first = store.new("alice")
    with pytest.raises(KeyStoreError) as err:
        store.new("alice")
    assert _code(err) == "key_exists"
    with pytest.raises(KeyStoreError) as err:
        store.import_key("alice", KNOWN_KEY)
    assert _code(err) == "key_exists"
    assert store.unlock("alice").address == first


@pytest.mark.parametrize(
    "name", ["", "Alice", "-a", ".a", "_a", "a/b", "../x", "a b", "a" * 65, "ä", "a\n"]
)
def test_bad_names_are_refused(store: KeyStore, name: str) -> None:
    with pytest.raises(KeyStoreError) as err:
        store.new(name)
    assert _code(err) == "invalid_key_name"


@pytest.mark.parametrize("name", ["a", "0", "a" * 64, "node-1.main_x", "steward.hospital-a"])
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


def test_unknown_key(store: KeyStore) -> None:
    for call in (store.show, store.unlock):
        with pytest.raises(KeyStoreError) as err:
            call("nobody")
        assert _code(err) == "key_not_found"


def test_missing_passphrase(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.new("alice")
    monkeypatch.delenv("DUL_KEY_PASSPHRASE")
    for call in (store.new, store.unlock):
        with pytest.raises(KeyStoreError, match="DUL_KEY_PASSPHRASE") as err:
            call("alice" if call == store.unlock else "bob")
        assert _code(err) == "passphrase_missing"
    assert [name for name, _ in store.list()] == ["alice"]  # listing needs no passphrase
    assert store.show("alice").name == "alice"


def test_wrong_passphrase_is_a_clear_error(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.new("alice")
    monkeypatch.setenv("DUL_KEY_PASSPHRASE", "wrong")
    with pytest.raises(KeyStoreError) as err:
        store.unlock("alice")
    assert _code(err) == "wrong_passphrase"
    assert str(err.value) == "wrong passphrase for key 'alice'"


def test_passphrase_file(tmp_path: Path, store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.new("alice")
    monkeypatch.delenv("DUL_KEY_PASSPHRASE")
    secret = tmp_path / "pass"
    secret.write_text(PASSPHRASE + "\n")
    monkeypatch.setenv("DUL_KEY_PASSPHRASE_FILE", str(secret))
    assert passphrase_from_env() == PASSPHRASE
    assert store.unlock("alice").address == store.show("alice").address

    secret.write_text(PASSPHRASE + " \n")  # only the newline is stripped, spaces are significant
    assert passphrase_from_env() == PASSPHRASE + " "
    secret.write_text("\n")
    with pytest.raises(KeyStoreError, match="is empty") as err:
        passphrase_from_env()
    assert _code(err) == "passphrase_missing"
    monkeypatch.setenv("DUL_KEY_PASSPHRASE_FILE", str(tmp_path / "absent"))
    with pytest.raises(KeyStoreError, match="cannot read the passphrase file") as err:
        passphrase_from_env()
    assert _code(err) == "passphrase_missing"


def test_explicit_passphrase_overrides_environment(home: Home) -> None:
    address = KeyStore(home, passphrase="other", scrypt_n=1 << 10).new("svc")
    assert KeyStore(home, passphrase="other").unlock("svc").address == address
    with pytest.raises(KeyStoreError) as err:
        KeyStore(home).unlock("svc")
    assert _code(err) == "wrong_passphrase"


@pytest.mark.parametrize("raw", ["1000", "abc", "0", "1"])
def test_bad_scrypt_n(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUL_KEY_SCRYPT_N", raw)
    with pytest.raises(ConfigError) as err:
        scrypt_n_from_env()
    assert err.value.code == "invalid_scrypt_n"


def test_scrypt_n_default_is_the_slow_real_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DUL_KEY_SCRYPT_N")
    assert scrypt_n_from_env() == 1 << 18
    monkeypatch.setenv("DUL_KEY_SCRYPT_N", "0x4000")
    assert scrypt_n_from_env() == 1 << 14


def test_corrupt_keystores(store: KeyStore, home: Home) -> None:
    store.new("alice")
    path = home.keys_dir / "alice.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "address": "00" * 20}))
    with pytest.raises(KeyStoreError, match="does not match") as err:
        store.unlock("alice")
    assert _code(err) == "keystore_corrupt"
    path.write_text("{not json")
    with pytest.raises(KeyStoreError) as err:
        store.list()
    assert _code(err) == "keystore_corrupt"


def test_no_key_material_in_logs(store: KeyStore) -> None:
    with capture_logs() as logs:
        store.import_key("k", KNOWN_KEY)
        store.unlock("k")
    assert [entry["event"] for entry in logs] == ["key_created", "key_unlocked"]
    assert KNOWN_KEY[2:] not in repr(logs).lower()
    assert KNOWN_KEY[2:] not in repr(store.unlock("k"))


def test_list_ignores_foreign_files(store: KeyStore, home: Home) -> None:
    store.new("b")
    store.new("a")
    (home.keys_dir / "README.txt").write_text("not a key")
    (home.keys_dir / ".a.json.123.tmp").write_text("{}")
    assert [name for name, _ in store.list()] == ["a", "b"]


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("DUL_HOME", str(tmp_path / "clihome"))
    return CliRunner()


def test_cli_new_list_show(runner: CliRunner, tmp_path: Path) -> None:
    created = runner.invoke(app, ["keys", "new", "alice", "--json"])
    assert created.exit_code == 0, created.stderr
    address = json.loads(created.stdout)["address"]
    listed = runner.invoke(app, ["keys", "list", "--json"])
    assert json.loads(listed.stdout) == [{"name": "alice", "address": address}]
    shown = runner.invoke(app, ["keys", "show", "alice", "--json"])
    path = tmp_path / "clihome" / "keys" / "alice.json"
    assert json.loads(shown.stdout) == {"name": "alice", "address": address, "path": str(path)}
    assert address in runner.invoke(app, ["keys", "list"]).stdout
    human = runner.invoke(app, ["keys", "show", "alice"]).stdout
    assert address in human
    assert str(path) in human


def test_cli_import_from_stdin(runner: CliRunner) -> None:
    result = runner.invoke(app, ["keys", "import", "bob", "--json"], input=KNOWN_KEY + "\n")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["address"] == KNOWN_ADDRESS
    assert KNOWN_KEY[2:] not in result.output


def test_cli_import_bad_key(runner: CliRunner) -> None:
    result = runner.invoke(app, ["keys", "import", "bob"], input="0xdeadbeef\n")
    assert result.exit_code == 1
    assert "private key is 32 bytes" in result.stderr
    assert "deadbeef" not in result.output
    empty = runner.invoke(app, ["keys", "import", "bob"], input="")
    assert empty.exit_code == 1
    assert "no private key on stdin" in empty.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "show", "nobody"], "no key named 'nobody'"),
        (["keys", "new", "Bad/Name"], "invalid key name"),
    ],
)
def test_cli_errors_are_one_line_exit_1(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_cli_missing_passphrase(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DUL_KEY_PASSPHRASE")
    result = runner.invoke(app, ["keys", "new", "alice"])
    assert result.exit_code == 1
    assert "no keystore passphrase" in result.stderr
    assert runner.invoke(app, ["keys", "list", "--json"]).stdout.strip() == "[]"


def test_cli_duplicate(runner: CliRunner) -> None:
    assert runner.invoke(app, ["keys", "new", "alice"]).exit_code == 0
    again = runner.invoke(app, ["keys", "new", "alice"])
    assert again.exit_code == 1
    assert "already exists" in again.stderr


def test_cli_import_an_eth_account_keystore_file(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = Account.encrypt(HexStr(KNOWN_KEY), "wallet secret", kdf="scrypt", iterations=2**10)
    path = tmp_path / "UTC--wallet.json"
    path.write_text(json.dumps(made))
    monkeypatch.setenv("DUL_IMPORT_PASSPHRASE", "wrong")
    wrong = runner.invoke(app, ["keys", "import", "carol", "--keystore", str(path)])
    assert wrong.exit_code == 1
    assert "wrong_passphrase" in wrong.stderr
    monkeypatch.setenv("DUL_IMPORT_PASSPHRASE", "wallet secret")
    result = runner.invoke(app, ["keys", "import", "carol", "--keystore", str(path), "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["address"] == KNOWN_ADDRESS
    shown = runner.invoke(app, ["keys", "show", "carol", "--json"])
    assert json.loads(shown.stdout)["address"] == KNOWN_ADDRESS
    not_json = tmp_path / "key.txt"
    not_json.write_text(KNOWN_KEY)
    refused = runner.invoke(app, ["keys", "import", "dave", "--keystore", str(not_json)])
    assert refused.exit_code == 1
    assert "not a JSON keystore" in refused.stderr


@pytest.mark.skipif(
    not (ROOT / "node_modules" / "ethers").exists() or shutil.which("node") is None,
    reason="ethers is not installed (npm ci)",
)
def test_cli_import_an_ethers_keystore_file(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = (
        'const { Wallet, encryptKeystoreJson } = require("ethers");'
        "const w = new Wallet(process.argv[1]);"
        "encryptKeystoreJson({ address: w.address, privateKey: w.privateKey }, 'ethers secret',"
        " { scrypt: { N: 1024 } }).then((json) => process.stdout.write(json));"
    )
    made = subprocess.run(
        [str(shutil.which("node")), "-e", script, KNOWN_KEY],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=True,
    )  # fmt: skip
    path = tmp_path / "ethers.json"
    path.write_text(made.stdout)
    monkeypatch.setenv("DUL_IMPORT_PASSPHRASE", "ethers secret")
    result = runner.invoke(app, ["keys", "import", "erin", "--keystore", str(path), "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["address"] == KNOWN_ADDRESS
