"""Deploy and wire the contracts, or verify an existing deployment.

Idempotent: with a manifest present, a second run checks that the recorded addresses on the
same chain hold exactly the packaged runtime code, and changes nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import structlog
from eth_abi.abi import encode
from eth_hash.auto import keccak
from eth_typing import ChecksumAddress
from web3 import Web3

from dul.contracts.artifacts import load, manifest
from dul.contracts.deployment import CONTRACT_NAMES, Deployment
from dul.contracts.ledger import send
from dul.errors import DeploymentError
from dul.home import write_private
from dul.signing import Signer

log = structlog.get_logger(__name__)

DEFAULT_ADMIN_DELAY = 86_400
"""Seconds between starting and accepting an operator hand-over (two-step admin transfer)."""


def deploy(
    w3: Web3, operator: Signer, path: Path, *, admin_delay: int = DEFAULT_ADMIN_DELAY
) -> tuple[Deployment, bool]:
    """Deploy everything unless `path` records a deployment; return it and whether it is new."""
    if path.exists():
        deployment = Deployment.load(path)
        verify(w3, deployment)
        return deployment, False
    started = time.perf_counter()
    chain_id = w3.eth.chain_id
    entries: dict[str, dict[str, Any]] = {}

    def create(name: str, types: list[str], args: list[Any]) -> ChecksumAddress:
        artifact = load(name)
        data = artifact.bytecode + encode(types, args).hex()
        receipt = send(w3, operator, {"data": data}, label=f"deploy {name}")
        address = Web3.to_checksum_address(receipt["contractAddress"] or "")
        code = bytes(w3.eth.get_code(address))
        entries[name] = {
            "address": address,
            "tx": receipt["transactionHash"].to_0x_hex(),
            "block": receipt["blockNumber"],
            "gas": receipt["gasUsed"],
            "code_hash": "0x" + keccak(code).hex(),
            "deployed_bytecode_hash": manifest().contracts[name].deployed_bytecode_hash,
        }
        return address

    membership = create("Membership", ["uint48", "address"], [admin_delay, operator.address])
    datasets = create("DatasetRegistry", ["address"], [membership])
    agreements = create("AgreementRegistry", ["address", "address"], [membership, datasets])
    consents = create("ConsentRegistry", ["address", "address"], [membership, datasets])
    access_log = create(
        "AccessLog", ["address", "address", "address"], [membership, agreements, consents]
    )
    create(
        "ArtifactRegistry", ["address", "address", "address"], [membership, agreements, access_log]
    )
    # The registry lets only its deployer bind, once: from now on only this AccessLog redeems
    # patient authorization codes.
    bind = w3.eth.contract(address=consents, abi=load("ConsentRegistry").abi).functions
    send(
        w3,
        operator,
        {"to": consents, "data": bind.bindAccessLog(access_log)._encode_transaction_data()},
        label="ConsentRegistry.bindAccessLog",
    )
    raw = {
        "chain_id": chain_id,
        "operator": operator.address,
        "admin_delay": admin_delay,
        "block": min(entry["block"] for entry in entries.values()),
        "compiler": manifest().compiler_version,
        "contracts": entries,
    }
    _write_atomically(path, raw)
    log.info(
        "contracts.deployed", seconds=round(time.perf_counter() - started, 3), chain_id=chain_id
    )
    return Deployment.load(path), True


def verify(w3: Web3, deployment: Deployment) -> None:
    """Raise `DeploymentError` unless the recorded addresses hold the packaged contracts."""
    chain_id = w3.eth.chain_id
    if chain_id != deployment.chain_id:
        raise DeploymentError(
            f"the deployment is for chain {deployment.chain_id}, the node serves chain {chain_id}",
            code="wrong_chain",
        )
    for name in CONTRACT_NAMES:
        address = deployment.address(name)
        code = bytes(w3.eth.get_code(address))
        if not code:
            raise DeploymentError(
                f"no code at {name}'s recorded address {address}: the chain was reset; "
                "remove the deployment manifest to deploy anew",
                code="code_missing",
            )
        if not load(name).runtime_code_matches(code):
            raise DeploymentError(
                f"the code at {name} ({address}) is not the packaged {name}; the sources "
                "changed since deployment",
                code="code_mismatch",
            )
    consents = w3.eth.contract(
        address=deployment.address("ConsentRegistry"), abi=load("ConsentRegistry").abi
    )
    bound = Web3.to_checksum_address(consents.functions.accessLog().call())
    if bound != deployment.address("AccessLog"):
        raise DeploymentError(
            f"ConsentRegistry redeems for {bound}, not the recorded AccessLog "
            f"{deployment.address('AccessLog')}; remove the deployment manifest to deploy anew",
            code="access_log_unbound",
        )
    artifacts = w3.eth.contract(
        address=deployment.address("ArtifactRegistry"), abi=load("ArtifactRegistry").abi
    )
    for getter, name in (
        ("MEMBERSHIP", "Membership"),
        ("AGREEMENTS", "AgreementRegistry"),
        ("ACCESS_LOG", "AccessLog"),
    ):
        wired = Web3.to_checksum_address(artifacts.functions[getter]().call())
        if wired != deployment.address(name):
            raise DeploymentError(
                f"ArtifactRegistry reads {name} at {wired}, not the recorded "
                f"{deployment.address(name)}; remove the deployment manifest to deploy anew",
                code="artifact_registry_miswired",
            )


def _write_atomically(path: Path, value: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(value, indent=2, sort_keys=True) + "\n")
