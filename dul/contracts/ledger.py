"""A small client for the deployed contracts: calls, and transactions signed by a `Signer`.

Used by deployment, the admin and steward commands and the tests — paths of a few transactions
a minute. The gateway's hot path has its own batched submitter and does not go through here.
Every transaction is simulated first, so a refused one costs nothing and raises a
`TransactionError` whose `code` is the contract's custom error name.
"""

from __future__ import annotations

import json
from typing import Any, cast

import structlog
from eth_typing import HexStr
from hexbytes import HexBytes
from web3 import Web3
from web3._utils.encoding import Web3JsonEncoder
from web3.contract import Contract
from web3.exceptions import ContractCustomError, ContractLogicError, TimeExhausted, Web3RPCError
from web3.providers import JSONBaseProvider
from web3.types import FilterParams, RPCEndpoint, RPCResponse, TxReceipt

from dul.chain.log_pages import gateway_sizer, get_logs
from dul.chain.rpc import RangeRefusedError, RpcClient
from dul.contracts.artifacts import load
from dul.contracts.deployment import Deployment
from dul.contracts.reverts import decode_revert
from dul.errors import ChainError, TransactionError
from dul.signing import Signer

log = structlog.get_logger(__name__)


class RpcProvider(JSONBaseProvider):
    """web3 over the product's one JSON-RPC client (`dul.chain.rpc.RpcClient`): the same
    transport (http or the node's IPC socket), bearer token and mapping of failures (a node that
    gives no usable answer raises `NodeUnavailableError`, a `ChainError`); the node's JSON-RPC
    errors reach web3 as replies, so it raises its own (a revert's custom error included)."""

    def __init__(self, rpc: RpcClient) -> None:
        super().__init__()
        self.rpc = rpc

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        plain = json.loads(json.dumps(list(params or []), cls=Web3JsonEncoder))
        return cast(RPCResponse, self.rpc.reply(method, *plain))

    def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            return "result" in self.rpc.reply("web3_clientVersion")
        except ChainError:
            if show_traceback:
                raise
            return False


def connect(rpc_url: str, timeout: float = 30.0, token: str | None = None) -> Web3:
    """web3 on `rpc_url` through the product's JSON-RPC client, presenting `token` (default:
    `dul.chain.rpc_auth.rpc_token()`) as `Authorization: Bearer`."""
    w3 = Web3(RpcProvider(RpcClient(rpc_url, timeout=timeout, token=token)))
    try:
        w3.eth.chain_id  # noqa: B018 - touch the node now so an unreachable URL fails here
    except Exception as exc:
        raise ChainError(
            f"no EVM node answers at {rpc_url}: {exc}", code="node_unreachable"
        ) from exc
    return w3


class Ledger:
    """The deployed contracts on one node."""

    def __init__(self, w3: Web3, deployment: Deployment) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.chain_id = deployment.chain_id
        self._contracts: dict[str, Contract] = {}
        self.log_pages = gateway_sizer()

    def contract(self, name: str) -> Contract:
        if name not in self._contracts:
            self._contracts[name] = self.w3.eth.contract(
                address=self.deployment.address(name), abi=load(name).abi
            )
        return self._contracts[name]

    def find_logs(
        self, filter_: dict[str, Any], *, newest_first: bool = False, first_match: bool = False
    ) -> list[Any]:
        """The logs `filter_` matches from the deployment block to the head, read in pages a
        node serves (`dul.chain.log_pages`); web3's log entries (bytes, HexBytes)."""

        def request(narrowed: dict[str, Any]) -> list[Any]:
            return list(self.w3.eth.get_logs(cast(FilterParams, narrowed)))

        return get_logs(
            request,
            filter_,
            int(self.deployment.raw.get("block", 0)),
            self.w3.eth.block_number,
            sizer=self.log_pages,
            refused=lambda exc: isinstance(exc, Web3RPCError | RangeRefusedError),
            newest_first=newest_first,
            first_match=first_match,
        )

    def call(self, contract: str, function: str, *args: Any) -> Any:
        return self.contract(contract).functions[function](*args).call()

    def transact(
        self, signer: Signer, contract: str, function: str, *args: Any, timeout: float = 60.0
    ) -> TxReceipt:
        fn = self.contract(contract).functions[function](*args)
        tx = {
            "from": signer.address,
            "to": self.deployment.address(contract),
            "data": fn._encode_transaction_data(),
        }
        return send(self.w3, signer, tx, timeout=timeout, label=f"{contract}.{function}")


def send(
    w3: Web3,
    signer: Signer,
    tx: dict[str, Any],
    *,
    timeout: float = 60.0,
    label: str = "transaction",
) -> TxReceipt:
    """Simulate, sign, send and wait for one transaction; a revert raises `TransactionError`."""
    tx = {"value": 0, **tx, "from": signer.address}
    try:
        gas = w3.eth.estimate_gas(tx)  # type: ignore[arg-type]
    except (ContractCustomError, ContractLogicError) as exc:
        raise _refused(label, exc) from None
    tx.update(
        gas=gas + gas // 5 + 10_000,
        gasPrice=0,
        nonce=w3.eth.get_transaction_count(signer.address, "pending"),
        chainId=w3.eth.chain_id,
    )
    tx.pop("from")
    raw = signer.sign_transaction(tx)
    try:
        tx_hash = w3.eth.send_raw_transaction(raw)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.05)
    except TimeExhausted as exc:
        raise ChainError(
            f"{label} was not mined within {timeout:.0f} s", code="tx_timeout"
        ) from exc
    except (Web3RPCError, ValueError) as exc:  # e.g. the permissioned endpoint's refusal
        raise ChainError(f"{label} refused by the node: {exc}", code="tx_refused") from exc
    if receipt["status"] != 1:
        raise TransactionError(f"{label} reverted in block {receipt['blockNumber']}")
    log.info("tx.mined", label=label, tx=HexBytes(tx_hash).to_0x_hex(), gas=receipt["gasUsed"])
    return receipt


def _refused(label: str, exc: ContractLogicError) -> TransactionError:
    data = exc.data
    raw = data.get("data") if isinstance(data, dict) else data
    decoded = (
        decode_revert(bytes.fromhex(str(raw)[2:]))
        if isinstance(raw, str) and raw.startswith("0x")
        else None
    )
    if decoded is None:
        return TransactionError(f"{label} refused: {exc}", code="reverted")
    return TransactionError(
        f"{label} refused: {decoded.describe()}", code=decoded.name, error_args=decoded.args
    )


def to_hex(value: bytes) -> HexStr:
    return HexStr("0x" + value.hex())
