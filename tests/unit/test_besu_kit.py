"""The Besu QBFT network kit in deploy/besu, checked by structure (no Besu binary runs here):
the QBFT extraData encoder against Besu's own vectors, the genesis and the allowlists against the
network description (decoded with the `rlp` package, addresses derived with eth-keys, so neither
depends on the encoder), every file parsing, every node config pointing at files that exist, and
`dul network genesis|permissions` run as a command."""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import rlp  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from eth_keys.datatypes import PublicKey
from typer.testing import CliRunner

from dul.chain.besu import (
    QBFT_MIX_HASH,
    genesis_json,
    load_network,
    parse_public_key,
    qbft_extra_data,
)
from dul.chain.settings import ChainSettings
from dul.cli.main import app
from dul.contracts.artifacts import load
from dul.contracts.deployment import CONTRACT_NAMES
from dul.errors import ConfigError

KIT = Path(__file__).resolve().parents[2] / "deploy" / "besu"
ROOT = KIT.parents[1]

#: Besu options the node configs may use, each checked against Besu's sources
#: (app/src/main/java/org/hyperledger/besu/cli/…Options.java, BesuCommand.java).
BESU_OPTIONS = {
    "genesis-file", "data-path", "node-private-key-file", "sync-mode",
    "p2p-host", "p2p-interface", "p2p-port", "bootnodes",
    "permissions-nodes-config-file-enabled", "permissions-nodes-config-file",
    "permissions-accounts-config-file-enabled", "permissions-accounts-config-file",
    "min-gas-price", "tx-pool-min-gas-price", "revert-reason-enabled",
    "rpc-http-enabled", "rpc-http-host", "rpc-http-port", "host-allowlist", "rpc-http-api",
    "rpc-http-authentication-enabled", "rpc-http-authentication-jwt-public-key-file",
    "rpc-http-authentication-jwt-algorithm", "rpc-max-logs-range",
}  # fmt: skip
FILE_OPTIONS = (
    "genesis-file",
    "permissions-nodes-config-file",
    "permissions-accounts-config-file",
    "rpc-http-authentication-jwt-public-key-file",
)
ENODE = re.compile(r"^enode://([0-9a-f]{128})@([0-9.]+|\[[0-9a-f:]+\]):(\d{1,5})$")


def network() -> dict[str, Any]:
    return tomllib.loads((KIT / "network.toml").read_text())


def address_of(public_key_hex: str) -> str:
    """Independently of dul.chain.besu: eth-keys' address of a 64-byte public key."""
    return PublicKey(bytes.fromhex(public_key_hex.removeprefix("0x"))).to_checksum_address()


# --- the encoder against Besu's vectors ----------------------------------------------------------


def test_extra_data_matches_besus_codec_test_vector() -> None:
    """QbftExtraDataCodecTest.RAW_HEX_ENCODING_STRING: vanity 0x01..0x20, validators 0x..01 and
    0x..02, an ADD vote for 0x..01, round 0xFEDCBA, seals (r=1, s=10) and (r=10, s=1), v=0."""
    besu = (
        "0xf8f0a00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20ea940000000000000000"
        "000000000000000000000001940000000000000000000000000000000000000002d7940000000000000000"
        "00000000000000000000000181ff83fedcbaf886b841000000000000000000000000000000000000000000"
        "0000000000000000000001000000000000000000000000000000000000000000000000000000000000000a"
        "00b841000000000000000000000000000000000000000000000000000000000000000a0000000000000000"
        "00000000000000000000000000000000000000000000000100"
    )

    def seal(r: int, s: int) -> bytes:
        return r.to_bytes(32, "big") + s.to_bytes(32, "big") + b"\x00"

    one, two = (19 * b"\x00" + b"\x01"), (19 * b"\x00" + b"\x02")
    encoded = qbft_extra_data(
        [one, two],
        vanity=bytes(range(1, 33)),
        vote=(one, True),
        round_number=0xFEDCBA,
        seals=[seal(1, 10), seal(10, 1)],
    )
    assert "0x" + encoded.hex() == besu


def test_extra_data_matches_besus_documented_genesis() -> None:
    """The QBFT genesis of Besu's documentation (four validators, in its order)."""
    documented = (
        "0xf87aa00000000000000000000000000000000000000000000000000000000000000000f8549464a702e6263b"
        "7297a96638cac6ae65e6541f4169943923390ad55e90c237593b3b0e401f3b08a0318594aefdb9a738c9f4"
        "33e5b6b212a6d62f6370c2f69294c7eeb9a4e00ce683cf93039b212648e01c6c6b78c080c0"
    )
    validators = [
        "64a702e6263b7297a96638cac6ae65e6541f4169",
        "3923390ad55e90c237593b3b0e401f3b08a03185",
        "aefdb9a738c9f433e5b6b212a6d62f6370c2f692",
        "c7eeb9a4e00ce683cf93039b212648e01c6c6b78",
    ]
    assert "0x" + qbft_extra_data([bytes.fromhex(v) for v in validators]).hex() == documented


def test_a_drop_vote_and_bad_parts_are_refused_or_encoded_as_besu() -> None:
    target = bytes(range(20))
    decoded = rlp.decode(qbft_extra_data([target], vote=(target, False), round_number=1))
    assert decoded[2] == [target, b""]  # DROP: the empty string
    assert decoded[3] == b"\x01"
    with pytest.raises(ValueError, match="20-byte"):
        qbft_extra_data([b"\x01"])
    with pytest.raises(ValueError, match="32 bytes"):
        qbft_extra_data([target], vanity=b"x")


# --- the kit -----------------------------------------------------------------------------------


def test_the_genesis_is_qbft_with_free_gas_and_the_embedded_chains_limits() -> None:
    genesis = json.loads((KIT / "genesis.json").read_text())
    described = network()
    config = genesis["config"]
    assert config["chainId"] == described["chain_id"]
    assert config["qbft"] == {
        "blockperiodseconds": described["block_period_seconds"],
        "epochlength": described["epoch_length"],
        "requesttimeoutseconds": described["request_timeout_seconds"],
    }
    assert described["request_timeout_seconds"] > described["block_period_seconds"]
    # free gas on London and later: zero base fee (and min-gas-price=0 on every node, below)
    assert config["londonBlock"] == 0
    assert config["zeroBaseFee"] is True
    assert int(genesis["baseFeePerGas"], 16) == 0
    assert not {"ethash", "clique", "ibft2"} & set(config)
    # the embedded chain's limits: anvil's block gas limit and its EIP-170 code size limit
    assert int(genesis["gasLimit"], 16) == ChainSettings().gas_limit == 1_000_000_000
    assert config["contractSizeLimit"] == 24_576
    # the contracts' EVM target is active from genesis
    evm = json.loads((ROOT / "solidity" / "compiler.json").read_text())["settings"]["evmVersion"]
    assert config[f"{evm}Time"] == 0
    # every packaged contract fits, as on the embedded chain
    for name in CONTRACT_NAMES:
        runtime = bytes.fromhex(load(name).deployed_bytecode[2:])
        assert 0 < len(runtime) <= config["contractSizeLimit"], name
    assert (genesis["difficulty"], genesis["mixHash"]) == ("0x1", QBFT_MIX_HASH)
    assert genesis["alloc"] == {}  # gas is free: no account needs a balance


def test_the_extra_data_decodes_to_the_configured_validators() -> None:
    genesis = json.loads((KIT / "genesis.json").read_text())
    vanity, validators, vote, round_number, seals = rlp.decode(
        bytes.fromhex(genesis["extraData"][2:])
    )
    assert vanity == bytes(32)
    assert (vote, round_number, seals) == ([], b"", [])
    configured = [address_of(n["public_key"]) for n in network()["node"] if n["validator"]]
    assert len(configured) >= 4  # the hospitals and the regulator: one may fail
    # Besu keeps validators ordered by address; the genesis lists them so
    assert ["0x" + v.hex() for v in validators] == sorted(a.lower() for a in configured)
    organizations = {n["organization"] for n in network()["node"] if n["validator"]}
    assert {"regulator", "hospital-a", "hospital-b", "hospital-c"} <= organizations


def test_the_kit_is_what_dul_network_writes_from_the_description() -> None:
    spec = load_network(KIT / "network.toml")
    assert (KIT / "genesis.json").read_text() == genesis_json(spec)
    assert (KIT / "permissions_config.toml").read_text() == spec.permissions()


def test_the_allowlists_name_every_node_and_account() -> None:
    allow = tomllib.loads((KIT / "permissions_config.toml").read_text())
    described = network()
    enodes = allow["nodes-allowlist"]
    assert len(enodes) == len(described["node"])
    for enode, node in zip(enodes, described["node"], strict=True):
        found = ENODE.match(enode)
        assert found is not None, enode
        key, host, port = found.groups()
        assert "0x" + key == node["public_key"].lower()
        assert ipaddress.ip_address(host.strip("[]")) == ipaddress.ip_address(node["host"])
        assert int(port) == node["p2p_port"]
    accounts = [a["address"] for a in described["account"]]
    assert allow["accounts-allowlist"] == accounts
    assert "operator" in {a["name"] for a in described["account"]}


def test_every_node_config_parses_and_points_at_files_that_exist() -> None:
    described = {n["name"]: n for n in network()["node"]}
    allow = tomllib.loads((KIT / "permissions_config.toml").read_text())
    configs = sorted((KIT / "nodes").glob("*/config.toml"))
    assert {c.parent.name for c in configs} == set(described)
    for path in configs:
        name = path.parent.name
        node = described[name]
        config = tomllib.loads(path.read_text())
        assert set(config) <= BESU_OPTIONS, set(config) - BESU_OPTIONS
        for option in FILE_OPTIONS:  # paths are relative to deploy/besu, where besu runs
            assert (KIT / config[option]).is_file(), (name, option, config[option])
        # made by Besu on first start, never in the kit: the node key stays with its owner
        assert config["data-path"] == f"data/{name}"
        key = KIT / config["node-private-key-file"]
        assert key == KIT / "data" / name / "key"  # Besu's default place, made on first start
        assert not key.exists()
        assert config["p2p-host"] == node["host"]
        assert config["p2p-port"] == node["p2p_port"]
        others = [e for e in allow["nodes-allowlist"] if f"@{node['host']}:" not in e]
        assert config["bootnodes"] == others
        assert config["min-gas-price"] == 0
        assert config["tx-pool-min-gas-price"] == 0
        assert config["rpc-http-authentication-enabled"] is True
        assert config["rpc-http-authentication-jwt-algorithm"] == "RS256"
        pem = (KIT / config["rpc-http-authentication-jwt-public-key-file"]).read_bytes()
        assert b"PRIVATE" not in pem
        public = load_pem_public_key(pem)
        assert isinstance(public, rsa.RSAPublicKey)  # RS256 verifies with an RSA key
        assert public.key_size >= 2048
        assert config["permissions-nodes-config-file-enabled"] is True
        assert config["permissions-accounts-config-file-enabled"] is True
        assert config["rpc-http-host"] == "127.0.0.1"
        assert config["rpc-max-logs-range"] > 0
        assert "ETH" in config["rpc-http-api"]
    assert not list(KIT.rglob("key")), "a node's private key is in the kit"
    assert not (KIT / "data").exists()


# --- the description's checks and the command ---------------------------------------------------


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "kit"
    shutil.copytree(KIT, target)
    return target / "network.toml"


def test_dul_network_writes_the_genesis_and_the_allowlists(tmp_path: Path) -> None:
    description = _copy(tmp_path)
    (description.parent / "genesis.json").unlink()
    (description.parent / "permissions_config.toml").unlink()
    runner = CliRunner()
    done = runner.invoke(app, ["network", "genesis", str(description), "--json"])
    assert done.exit_code == 0, done.output
    facts = json.loads(done.stdout)
    written = description.parent / "genesis.json"
    assert facts["genesis"] == str(written)
    assert written.read_text() == (KIT / "genesis.json").read_text()
    assert facts["fault_tolerance"] == 1
    assert [v["address"] for v in facts["validators"]] == sorted(
        (address_of(n["public_key"]) for n in network()["node"] if n["validator"]),
        key=str.lower,
    )
    human = runner.invoke(app, ["network", "genesis", str(description), "--out",
                                str(tmp_path / "other" / "g.json")])  # fmt: skip
    assert human.exit_code == 0, human.output
    assert "tolerates    1 faulty validator(s) of 4" in human.stdout
    assert (tmp_path / "other" / "g.json").read_text() == written.read_text()
    allow = runner.invoke(app, ["network", "permissions", str(description), "--json"])
    assert allow.exit_code == 0, allow.output
    assert json.loads(allow.stdout)["accounts"] == [a["address"] for a in network()["account"]]
    assert (description.parent / "permissions_config.toml").read_text() == (
        KIT / "permissions_config.toml"
    ).read_text()
    unwritable = runner.invoke(app, ["network", "genesis", str(description), "--out",
                                     str(description / "genesis.json")])  # fmt: skip
    assert unwritable.exit_code == 1
    assert "[write_failed]" in unwritable.output


BAD = [
    ('host = "10.20.0.11"', 'host = "hospital-a.example.org"', "IP address"),
    ("chain_id = 730514", "chain_id = 0", "chain_id"),
    ("validator = true", "validator = maybe", "Invalid value"),
    ('name = "hospital-b"', 'name = "hospital-a"', "node name listed twice"),
    ('organization = "hospital-a"', 'organization = "Hospital A"', "lower-case"),
    ("p2p_port = 30303", "p2p_port = 70000", "p2p_port"),
    ("gas_limit = 1_000_000_000", "gas_limit = 1", "gas_limit"),
    ("epoch_length = 30000", "epoch_length = 30000\nsurprise = 1", "surprise"),
]


@pytest.mark.parametrize(("old", "new", "says"), BAD)
def test_a_bad_description_is_one_line_and_writes_nothing(
    tmp_path: Path, old: str, new: str, says: str
) -> None:
    description = _copy(tmp_path)
    text = description.read_text()
    assert old in text
    description.write_text(text.replace(old, new, 1))
    out = tmp_path / "fresh" / "genesis.json"
    result = CliRunner().invoke(app, ["network", "genesis", str(description), "--out", str(out)])
    assert result.exit_code == 1
    assert "[invalid_network]" in result.output
    assert says in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_node_keys_must_be_curve_points_and_validators_must_exist(tmp_path: Path) -> None:
    key = network()["node"][0]["public_key"]
    assert parse_public_key(key) == bytes.fromhex(key[2:])
    assert parse_public_key("0x04" + key[2:]) == bytes.fromhex(key[2:])
    for bad in ("0x1234", "0x" + "00" * 64, "0x05" + key[2:], "zz" * 64):
        with pytest.raises(ConfigError):
            parse_public_key(bad)
    description = _copy(tmp_path)
    description.write_text(description.read_text().replace("validator = true", "validator = false"))
    with pytest.raises(ConfigError, match="no validator"):
        load_network(description)
    with pytest.raises(ConfigError, match="no network description"):
        load_network(tmp_path / "missing.toml")
    description.write_text("chain_id = [")
    with pytest.raises(ConfigError, match=r"network\.toml"):
        load_network(description)
