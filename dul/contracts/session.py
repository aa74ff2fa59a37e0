"""Open the ledger of a data directory: node URL, deployment manifest, keystore."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eth_typing import ChecksumAddress
from eth_utils.address import is_address, to_checksum_address

from dul.chain.node import rpc_url
from dul.contracts.deployment import Deployment
from dul.errors import ConfigError
from dul.home import Home
from dul.keys import KeyStore
from dul.signing import Signer

if TYPE_CHECKING:
    from dul.contracts.ledger import Ledger


def open_ledger(home: Home) -> Ledger:
    from dul.contracts.ledger import Ledger, connect  # web3: ~1 s to import, only to transact

    return Ledger(connect(rpc_url(home)), Deployment.load(home.deployment))


def unlock(home: Home, key: str) -> Signer:
    return KeyStore(home).unlock(key)


def resolve_account(home: Home, account: str) -> ChecksumAddress:
    """An address, or the name of a keystore in this data directory."""
    if is_address(account):
        return to_checksum_address(account)
    try:
        return KeyStore(home).show(account).address
    except Exception as exc:
        raise ConfigError(
            f"{account!r} is neither an address nor a key in {home.keys_dir}",
            code="unknown_account",
        ) from exc
