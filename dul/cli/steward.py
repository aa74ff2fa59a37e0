"""`dul steward …`: a hospital's data steward registers datasets, runs agreements, records and
withdraws patients' consents and issues their one-time authorization codes, through the gateway.
Every signature and transaction is made here with the steward's keystore; only signed bytes go to
the gateway, which checks and relays them (the key never travels). Patients are named by their
hospital-internal pseudonym, which becomes a subject reference here (HMAC under the hospital's
subject key) and never leaves this machine; authorization codes are made here and only their
hash is sent.

Drafts are JSON or TOML; `agreement draft` turns one with defaults and names into an explicit
draft (nonce, window and deadline fixed) that `agreement submit` proposes unchanged:

    holder = "hospital-a"              requester = "institute"
    scenario = "RESEARCH"              max_tier = "DEIDENTIFIED"
    operations = ["QUERY", "EXPORT_RESULT"]
    quota = 1000                       days = 365          # or valid_from / valid_until
    duo_codes = ["DUO:0000042", "DUO:0000046"]
    [[datasets]]
    id = "hospital-a/omop-cdm"
    fields = ["person.year_of_birth", 2]   # names, indices, or field_mask = 0x1e
"""

from __future__ import annotations

import contextlib
import json
import time
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import typer
from eth_hash.auto import keccak

from dul.cli.common import (
    GatewayOption,
    JsonOption,
    cli_errors,
    console,
    emit_json,
    err_console,
    home,
)
from dul.consent_terms import MAX_SCOPE_ENTRIES, disease_term
from dul.contracts.bindings import event
from dul.contracts.ledger import Ledger
from dul.contracts.session import open_ledger, unlock
from dul.contracts.typed_data import AgreementTerms, agreement_domain
from dul.domain import (
    MAX_BREAK_GLASS_REVIEW_HOURS,
    ConsentPolicy,
    Operation,
    Scenario,
    Tier,
    operations_mask,
    slug_id,
    slug_of,
)
from dul.endpoints import gateway_url
from dul.errors import ConfigError, DulError
from dul.home import Home
from dul.signing import Signer, typed_data_digest
from ledger_gateway.relay import function
from ledger_gateway.steward import (
    DATASET_REGISTERED,
    DATASET_TOPIC,
    AgreementOut,
    SignatureOut,
    TransactionOut,
)
from ledger_gateway.steward_client import StewardClient, sign_steward_call

app = typer.Typer(
    help=(
        "Data steward: datasets, agreements, patients' consents and authorization codes through "
        "the gateway; keys, pseudonyms and codes stay here."
    ),
    no_args_is_help=True,
)
dataset_app = typer.Typer(help="Register datasets.", no_args_is_help=True)
agreement_app = typer.Typer(
    help="Draft, submit, sign, suspend, resume, revoke and show agreements.", no_args_is_help=True
)
app.add_typer(dataset_app, name="dataset")
app.add_typer(agreement_app, name="agreement")

TokenOption = Annotated[
    str,
    typer.Option(
        "--token", envvar="DUL_GATEWAY_TOKEN", help="Steward API token (dul admin token)."
    ),
]
KeyOption = Annotated[str, typer.Option("--key", help="Keystore that signs (the steward's).")]
WaitOption = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Wait until the transaction is mined.")
]


@contextlib.contextmanager
def _gateway(url: str | None, token: str) -> Iterator[StewardClient]:
    """A steward client; an unreachable gateway is one clear error, not a traceback."""
    url = url or gateway_url()
    try:
        client = StewardClient(url, token)
        try:
            yield client
        finally:
            client.close()
    except httpx.HTTPError as exc:
        raise DulError(
            f"no gateway answers at {url} ({exc}): start it with `dul gateway serve`, or set "
            "DUL_GATEWAY_URL / DUL_GATEWAY_PORT",
            code="gateway_unreachable",
        ) from None


def _id32(value: str) -> bytes:
    """A 0x-hex bytes32, or a slug (organization or dataset id)."""
    if value.startswith("0x") and len(value) == 66:
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    try:
        return slug_id(value)
    except ValueError as exc:
        raise ConfigError(str(exc), code="invalid_id") from None


def _agreement_id(value: str) -> str:
    if not (value.startswith("0x") and len(value) == 66):
        raise ConfigError(f"{value!r} is not a 0x-prefixed 32-byte agreement id", code="invalid_id")
    return value.lower()


def _enum(kind: type[Any], value: Any, what: str) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return kind(value)
    try:
        return kind[str(value).upper().replace("-", "_")]
    except KeyError:
        choices = ", ".join(m.name for m in kind)
        raise ConfigError(
            f"unknown {what} {value!r}; one of {choices}", code="invalid_draft"
        ) from None


def _time(value: Any, what: str) -> int:
    """Unix seconds from an integer or an ISO 8601 date / date-time (UTC when no zone)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            raise ConfigError(f"{what} {value!r} is neither unix seconds nor an ISO date",
                              code="invalid_draft") from None  # fmt: skip
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _duo(value: Any) -> int:
    text = str(value).upper().removeprefix("DUO:")
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            f"bad DUO code {value!r} (e.g. DUO:0000042)", code="invalid_draft"
        ) from None


def _disease(value: Any) -> bytes:
    """A disease term: an ontology CURIE (MONDO:0007254), or its 0x-hex bytes32 form."""
    from dul.consent_terms import ScopeError, disease_code

    text = str(value).strip()
    if text.startswith("0x"):
        return _bytes32(text, "disease_code")
    try:
        return disease_code(text)
    except ScopeError as exc:
        raise ConfigError(str(exc), code="invalid_disease") from None


def _bytes32(value: Any, what: str) -> bytes:
    text = str(value)
    if text.startswith("0x") and len(text) == 66:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(text[2:])
    raise ConfigError(f"{what} must be 0x-prefixed 32 bytes", code="invalid_draft")


def dataset_fields(ledger: Ledger, dataset: bytes) -> list[str]:
    """Field names of a registered dataset, from its DatasetRegistered event."""

    logs = ledger.find_logs(
        {
            "address": ledger.deployment.address("DatasetRegistry"),
            "topics": ["0x" + DATASET_TOPIC.hex(), "0x" + dataset.hex()],
        },
        first_match=True,
    )
    if not logs:
        raise ConfigError(f"dataset {slug_of(dataset)} is not registered", code="unknown_dataset")
    _, _, fields = DATASET_REGISTERED.decode_data(bytes(logs[0]["data"]))
    return [str(f) for f in fields]


def _field_items(given: Iterable[str]) -> list[int | str]:
    """Field names and indices as given on the command line (digits are indices)."""
    return [int(f) if f.isdigit() else f for f in given]


def _mask(entry: dict[str, Any], dataset: bytes, ledger: Ledger | None) -> int:
    if "field_mask" in entry:
        mask = entry["field_mask"]
        return int(mask, 0) if isinstance(mask, str) else int(mask)
    names: list[str] | None = None
    mask = 0
    for item in entry.get("fields", []):
        if isinstance(item, int):
            mask |= 1 << item
            continue
        if names is None:
            if ledger is None:
                raise ConfigError("field names need the chain (dul chain up or DUL_RPC_URL)")
            names = dataset_fields(ledger, dataset)
        if item not in names:
            raise ConfigError(f"{slug_of(dataset)} has no field {item!r}", code="invalid_draft")
        mask |= 1 << names.index(item)
    if mask == 0:
        raise ConfigError(f"dataset {slug_of(dataset)}: no fields given", code="invalid_draft")
    return mask


def build_terms(draft: dict[str, Any], ledger: Ledger | None = None) -> AgreementTerms:
    """AgreementTerms from a draft (names, dates and defaults allowed)."""
    now = int(time.time())
    try:
        datasets = draft["datasets"]
        holder, requester = _id32(draft["holder"]), _id32(draft["requester"])
    except KeyError as exc:
        raise ConfigError(f"the draft needs {exc.args[0]!r}", code="invalid_draft") from None
    ids = tuple(_id32(str(d["id"])) for d in datasets)
    valid_from = _time(draft.get("valid_from", now), "valid_from")
    if "valid_until" in draft:
        valid_until = _time(draft["valid_until"], "valid_until")
    else:
        valid_until = valid_from + int(draft.get("days", 365)) * 86_400
    operations = draft.get("operations", ["QUERY"])
    if isinstance(operations, list):
        operations = operations_mask(*(_enum(Operation, o, "operation") for o in operations))
    terms_hash = draft.get("terms_hash")
    break_glass = draft.get("break_glass_review_hours", 0)
    if not isinstance(break_glass, int) or not 0 <= break_glass <= MAX_BREAK_GLASS_REVIEW_HOURS:
        raise ConfigError(
            f"break_glass_review_hours must be 0 (none) to {MAX_BREAK_GLASS_REVIEW_HOURS}, "
            f"not {break_glass!r}",
            code="invalid_draft",
        )
    return AgreementTerms(
        holder=holder,
        requester=requester,
        datasets=ids,
        field_masks=tuple(_mask(d, i, ledger) for d, i in zip(datasets, ids, strict=True)),
        scenario=_enum(Scenario, draft.get("scenario", "RESEARCH"), "scenario"),
        max_tier=_enum(Tier, draft.get("max_tier", "AGGREGATE"), "tier"),
        operations=int(operations),
        valid_from=valid_from,
        valid_until=valid_until,
        quota=int(draft.get("quota", 1000)),
        consent_policy=_enum(ConsentPolicy, draft.get("consent_policy", "NONE"), "consent policy"),
        terms_hash=_bytes32(terms_hash, "terms_hash") if terms_hash else bytes(32),
        nonce=int(draft.get("nonce", time.time_ns())),
        deadline=_time(draft.get("deadline", now + 7 * 86_400), "deadline"),
        duo_codes=tuple(_duo(c) for c in draft.get("duo_codes", [])),
        disease_code=_disease(draft["disease_code"]) if draft.get("disease_code") else bytes(32),
        ethics_approval=_bytes32(draft["ethics_approval"], "ethics_approval")
        if draft.get("ethics_approval") else bytes(32),
        break_glass_review_hours=break_glass,
    )  # fmt: skip


def draft_of(terms: AgreementTerms) -> dict[str, Any]:
    """The explicit draft of `terms` (what `submit` reads back to the same id)."""
    return {
        "holder": slug_of(terms.holder),
        "requester": slug_of(terms.requester),
        "datasets": [
            {"id": slug_of(d), "field_mask": hex(m)}
            for d, m in zip(terms.datasets, terms.field_masks, strict=True)
        ],
        "scenario": terms.scenario.name,
        "max_tier": terms.max_tier.name,
        "operations": [o.name for o in Operation if terms.operations >> o & 1],
        "consent_policy": terms.consent_policy.name,
        "valid_from": terms.valid_from,
        "valid_until": terms.valid_until,
        "quota": terms.quota,
        "terms_hash": "0x" + terms.terms_hash.hex(),
        "nonce": terms.nonce,
        "deadline": terms.deadline,
        "duo_codes": [f"DUO:{c:07d}" for c in terms.duo_codes],
        "disease_code": disease_term(terms.disease_code) or "0x" + terms.disease_code.hex(),
        "ethics_approval": "0x" + terms.ethics_approval.hex(),
        "break_glass_review_hours": terms.break_glass_review_hours,
    }


def _read_draft(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", code="invalid_draft") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid {path.suffix[1:] or 'JSON'}: {exc}",
                          code="invalid_draft") from None  # fmt: skip
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold one object", code="invalid_draft")
    return data


def _date(value: int) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _field_names(mask: int, names: list[str] | None) -> str:
    """The fields a mask selects, by name when the dataset's names are known."""
    indices = [i for i in range(mask.bit_length()) if mask >> i & 1]
    if names is not None and indices and indices[-1] < len(names):
        return ", ".join(names[i] for i in indices)
    return "field indices " + ", ".join(str(i) for i in indices)


def _names_of(ledger: Ledger | None, dataset: bytes) -> list[str] | None:
    if ledger is None:
        return None
    try:
        return dataset_fields(ledger, dataset)
    except DulError:
        return None


def summary(message: dict[str, Any], ledger: Ledger | None = None) -> list[str]:
    """What a party signs, in words: shown before the key is used (field names read from the
    datasets' registrations when `ledger` is given)."""
    ops = int(message["operations"])
    lines = [
        f"agreement   {message['id']} (version {message['version']})",
        f"holder      {slug_of(bytes.fromhex(message['holder'][2:]))}",
        f"requester   {slug_of(bytes.fromhex(message['requester'][2:]))}",
        f"scenario    {Scenario(int(message['scenario'])).name}"
        + "".join(f" DUO:{int(c):07d}" for c in message["duoCodes"]),
        f"max tier    {Tier(int(message['maxTier'])).name}",
        f"operations  {', '.join(o.name for o in Operation if ops >> o & 1)}",
        f"window      {_date(int(message['validFrom']))} .. {_date(int(message['validUntil']))}",
        f"quota       {message['quota']} accesses",
        f"consent     {ConsentPolicy(int(message['consentPolicy'])).name}",
        f"terms hash  {message['termsHash']}",
        f"sign by     {_date(int(message['deadline']))}",
    ]
    for dataset, mask in zip(message["datasets"], message["fieldMasks"], strict=True):
        raw = bytes.fromhex(dataset[2:])
        fields = _field_names(int(mask), _names_of(ledger, raw))
        lines.append(f"dataset     {slug_of(raw)}: {fields}")
    return lines


def _signed(h: Home, ledger: Ledger, key: str, contract: str, data: bytes) -> bytes:
    """`data` as a transaction to `contract`, signed with the steward's keystore `key`."""
    return sign_steward_call(ledger.w3, unlock(h, key), ledger.deployment.address(contract), data)


def _relayed(answer: TransactionOut | SignatureOut, json_output: bool, **facts: Any) -> None:
    out = {**answer.model_dump(exclude_none=True), **facts}
    if json_output:
        emit_json(out)
    else:
        console.print(" ".join(f"{k}={v}" for k, v in out.items()), highlight=False)


# --------------------------------------------------------------------------- datasets


@dataset_app.command("register")
@cli_errors
def dataset_register(
    dataset: Annotated[str, typer.Argument(help="Dataset id (slug up to 32 bytes, or 0x-hex).")],
    holder: Annotated[str, typer.Option(help="Holder organization (the steward's).")],
    field: Annotated[
        list[str] | None, typer.Option("--field", help="Field name, in index order; repeat.")
    ] = None,
    fields_file: Annotated[
        Path | None, typer.Option(help="File with one field name per line.")
    ] = None,
    schema: Annotated[str, typer.Option(help="Schema reference text, hashed.")] = "OMOP CDM 5.4",
    max_tier: Annotated[str, typer.Option(help="Most sensitive tier offered.")] = "DEIDENTIFIED",
    key: KeyOption = "steward",
    gateway: GatewayOption = None,
    token: TokenOption = "",
    wait: WaitOption = True,
    json_output: JsonOption = False,
) -> None:
    """Register a dataset (described, never stored): signed here, relayed by the gateway."""
    names = list(field or [])
    if fields_file is not None:
        names += [n.strip() for n in fields_file.read_text().splitlines() if n.strip()]
    if not names:
        raise ConfigError("give the dataset's fields (--field … or --fields-file)")
    h = home()
    ledger = open_ledger(h)
    data = function("DatasetRegistry", "registerDataset").encode(
        _id32(dataset),
        _id32(holder),
        keccak(schema.encode()),
        names,
        int(_enum(Tier, max_tier, "tier")),
    )
    raw = _signed(h, ledger, key, "DatasetRegistry", data)
    with _gateway(gateway, token) as client:
        _relayed(client.register_dataset(raw, wait=wait), json_output, fields=len(names))


# --------------------------------------------------------------------------- agreements


@agreement_app.command("draft")
@cli_errors
def agreement_draft(
    file: Annotated[Path | None, typer.Argument(help="Draft file, JSON or TOML.")] = None,
    holder: Annotated[str | None, typer.Option(help="Holder organization.")] = None,
    requester: Annotated[str | None, typer.Option(help="Requesting organization.")] = None,
    dataset: Annotated[
        list[str] | None,
        typer.Option("--dataset", help="DATASET=FIELD,FIELD… (names or indices); repeat."),
    ] = None,
    scenario: Annotated[str | None, typer.Option(help="e.g. RESEARCH, AI_TRAINING.")] = None,
    max_tier: Annotated[str | None, typer.Option(help="e.g. DEIDENTIFIED.")] = None,
    operation: Annotated[
        list[str] | None, typer.Option("--operation", help="QUERY, TRAIN, EXPORT_RESULT; repeat.")
    ] = None,
    quota: Annotated[int | None, typer.Option(help="Access quota.")] = None,
    days: Annotated[int | None, typer.Option(help="Validity from now, in days.")] = None,
    duo: Annotated[list[str] | None, typer.Option("--duo", help="DUO code; repeat.")] = None,
    disease: Annotated[
        str | None,
        typer.Option(help="The study's disease term, an ontology CURIE, e.g. MONDO:0007254."),
    ] = None,
    consent_policy: Annotated[str | None, typer.Option(help="NONE, COHORT_CONSENT, …")] = None,
    break_glass_review_hours: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=720,
            help="Allow break-glass (cross-organization clinical care only): hours a steward "
            "of the holder has to review each emergency access.",
        ),
    ] = None,
    terms_file: Annotated[
        Path | None, typer.Option(help="The agreement's legal text; its keccak256 is signed.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the explicit draft here.")] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the agreement id (for scripts).")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Build an agreement's terms: prints its id and the EIP-712 typed data to be signed."""
    draft = _read_draft(file) if file is not None else {}
    overrides: dict[str, Any] = {
        "holder": holder,
        "requester": requester,
        "scenario": scenario,
        "max_tier": max_tier,
        "operations": operation,
        "quota": quota,
        "days": days,
        "duo_codes": duo,
        "disease_code": disease,
        "consent_policy": consent_policy,
        "break_glass_review_hours": break_glass_review_hours,
    }
    draft.update({k: v for k, v in overrides.items() if v})
    if dataset:
        entries = []
        for spec in dataset:
            name, _, fields = spec.partition("=")
            entries.append({"id": name, "fields": _field_items(filter(None, fields.split(",")))})
        draft["datasets"] = entries
    if terms_file is not None:
        draft["terms_hash"] = "0x" + keccak(terms_file.read_bytes()).hex()
    h = home()
    ledger = None
    with contextlib.suppress(DulError):
        ledger = open_ledger(h)
    terms = build_terms(draft, ledger)
    explicit = draft_of(terms)
    if out is not None:
        out.write_text(json.dumps(explicit, indent=2) + "\n")
    result: dict[str, Any] = {"agreement_id": "0x" + terms.agreement_id.hex(), "draft": explicit}
    if ledger is not None:
        domain = agreement_domain(ledger.chain_id, ledger.deployment.address("AgreementRegistry"))
        result["typed_data"] = terms.typed_data(domain)
        result["digest"] = "0x" + terms.digest(domain).hex()
    if json_output:
        emit_json(result)
        return
    if quiet:
        console.print(result["agreement_id"], highlight=False)
        return
    console.print(f"agreement id {result['agreement_id']}", highlight=False)
    if "typed_data" in result:
        for line in summary(result["typed_data"]["message"], ledger):
            console.print(line, highlight=False)
        console.print(json.dumps(result["typed_data"], indent=2), highlight=False)
    if out is not None:
        console.print(f"draft written to {out}; propose it with `dul steward agreement submit`")


@agreement_app.command("submit")
@cli_errors
def agreement_submit(
    file: Annotated[Path, typer.Argument(help="Draft file (from `agreement draft --out`).")],
    amends: Annotated[
        str | None, typer.Option(help="Propose as the next version of this agreement.")
    ] = None,
    key: KeyOption = "steward",
    gateway: GatewayOption = None,
    token: TokenOption = "",
    wait: WaitOption = True,
    json_output: JsonOption = False,
) -> None:
    """Propose (or amend) an agreement: signed here as the holder's steward, relayed."""
    h = home()
    ledger = open_ledger(h)
    terms = build_terms(_read_draft(file), ledger)
    if amends is None:
        data = function("AgreementRegistry", "propose").encode(terms.as_abi())
    else:
        previous = bytes.fromhex(_agreement_id(amends)[2:])
        data = function("AgreementRegistry", "amend").encode(previous, terms.as_abi())
    raw = _signed(h, ledger, key, "AgreementRegistry", data)
    with _gateway(gateway, token) as client:
        _relayed(client.propose(raw, wait=wait), json_output)


@agreement_app.command("sign")
@cli_errors
def agreement_sign(
    agreement: Annotated[str, typer.Argument(help="Agreement id (0x…).")],
    key: KeyOption = "steward",
    yes: Annotated[bool, typer.Option("--yes", help="Sign without asking.")] = False,
    gateway: GatewayOption = None,
    token: TokenOption = "",
    wait: WaitOption = True,
    json_output: JsonOption = False,
) -> None:
    """Sign an agreement's EIP-712 data with your key, after reading what it says."""
    agreement = _agreement_id(agreement)
    h = home()
    with _gateway(gateway, token) as client:
        typed = client.typed_data(agreement)
        message = typed.get("message", {})
        if str(message.get("id", "")).lower() != agreement:
            raise DulError(
                "the gateway sent typed data of another agreement", code="bad_typed_data"
            )
        _check_domain(typed)
        ledger = None
        with contextlib.suppress(DulError):  # names of the fields, when the ledger is here
            ledger = open_ledger(h)
        if not json_output:
            for line in summary(message, ledger):
                console.print(line, highlight=False)
        if not yes and not typer.confirm("Sign this agreement?"):
            raise typer.Exit(1)
        signer: Signer = unlock(h, key)
        digest = typed_data_digest(typed)
        answer = client.add_signature(
            agreement, signer.address, signer.sign_digest(digest), wait=wait
        )
    _relayed(answer, json_output)


def _check_domain(typed: dict[str, Any]) -> None:
    """When this machine has the deployment manifest, the typed data must be for its chain
    and registry (a signature for another chain or contract would be worthless or worse)."""
    from dul.contracts.deployment import Deployment

    try:
        deployment = Deployment.load(home().deployment)
    except DulError:
        err_console.print("note: no deployment manifest here; the signing domain is unchecked")
        return
    domain = typed.get("domain", {})
    registry = deployment.address("AgreementRegistry")
    contract = str(domain.get("verifyingContract", ""))
    if domain.get("chainId") != deployment.chain_id or contract.lower() != registry.lower():
        raise DulError(
            f"typed data is for chain {domain.get('chainId')} contract "
            f"{domain.get('verifyingContract')}, not this ledger's registry {registry}",
            code="bad_typed_data",
        )


def _lifecycle(
    step: Literal["suspend", "resume", "revoke"],
    agreement: str,
    reason: str | None,
    key: str,
    gateway: str | None,
    token: str,
    wait: bool,
    json_output: bool,
) -> None:
    agreement = _agreement_id(agreement)
    agreement_bytes = bytes.fromhex(agreement[2:])
    fn = function("AgreementRegistry", step)
    if step == "resume":
        data = fn.encode(agreement_bytes)
    else:
        text = (reason or "").encode()
        data = fn.encode(
            agreement_bytes, text.ljust(32, b"\0") if len(text) <= 32 else keccak(text)
        )
    h = home()
    ledger = open_ledger(h)
    raw = _signed(h, ledger, key, "AgreementRegistry", data)
    with _gateway(gateway, token) as client:
        _relayed(client.lifecycle(step, agreement, raw, wait=wait), json_output)


ReasonOption = Annotated[
    str | None, typer.Option(help="Why (up to 32 bytes kept as text, longer text hashed).")
]


@agreement_app.command("suspend")
@cli_errors
def agreement_suspend(
    agreement: str,
    reason: ReasonOption = None,
    key: KeyOption = "steward",
    gateway: GatewayOption = None,
    token: TokenOption = "",
    wait: WaitOption = True,
    json_output: JsonOption = False,
) -> None:
    """Suspend an active agreement (a steward of either party)."""
    _lifecycle("suspend", agreement, reason, key, gateway, token, wait, json_output)


@agreement_app.command("resume")
@cli_errors
def agreement_resume(
    agreement: str,
    key: KeyOption = "steward",
    gateway: GatewayOption = None,
    token: TokenOption = "",
    wait: WaitOption = True,
    json_output: JsonOption = False,
) -> None:
    """Resume a suspended agreement."""
    _lifecycle("resume", agreement, None, key, gateway, token, wait, json_output)


@agreement_app.command("revoke")
@cli_errors
def agreement_revoke(
    agreement: str,
    reason: ReasonOption = None,
    key: KeyOption = "steward",
    gateway: GatewayOption = None,
    token: TokenOption = "",
    wait: WaitOption = True,
    json_output: JsonOption = False,
) -> None:
    """Revoke an agreement for good (the holder's steward)."""
    _lifecycle("revoke", agreement, reason, key, gateway, token, wait, json_output)


@agreement_app.command("show")
@cli_errors
def agreement_show(
    agreement: str,
    gateway: GatewayOption = None,
    token: TokenOption = "",
    json_output: JsonOption = False,
) -> None:
    """An agreement's terms, versions, status, signers and quota used."""
    with _gateway(gateway, token) as client:
        found: AgreementOut = client.get_agreement(_agreement_id(agreement))
    if json_output:
        emit_json(found.model_dump())
        return
    lines = [
        f"agreement   {found.agreement_id} (version {found.version})",
        f"status      {found.status}",
        f"parties     {found.holder} -> {found.requester}",
        f"scenario    {found.scenario} {' '.join(found.duo_codes)}",
        f"max tier    {found.max_tier}; operations {', '.join(found.operations)}",
        f"window      {_date(found.valid_from)} .. {_date(found.valid_until)}",
        f"quota       {found.quota_used} of {found.quota} used",
        f"signed by   holder {found.signers['holder'] or '-'}, "
        f"requester {found.signers['requester'] or '-'}",
    ]
    lines += [
        f"dataset     {d.dataset}: {', '.join(d.fields) or d.field_mask}" for d in found.datasets
    ]
    if len(found.versions) > 1 or found.superseded_by:
        chain = " -> ".join(f"v{v.version} {v.agreement_id[:10]}…" for v in found.versions)
        lines.append(f"versions    {chain}" + (f" (superseded by {found.superseded_by})"
                                                if found.superseded_by else ""))  # fmt: skip
    for line in lines:
        console.print(line, highlight=False)


# --------------------------------------------------------------------------- patients
# Pseudonyms never leave this machine: they become subject references here, under the hospital's
# subject key, and only the references go to the gateway and the chain.

consent_app = typer.Typer(
    help=(
        "Record, withdraw and list patients' consents. Patients are named by their "
        "hospital-internal pseudonym, turned into a subject reference here with the hospital's "
        "subject key (--subject-key, default DUL_HOME/keys/<holder>.subject-key; `consent grant` "
        "creates it on first use). The pseudonym is never sent anywhere."
    ),
    no_args_is_help=True,
)
authorization_app = typer.Typer(
    help=(
        "Issue and revoke a patient's one-time authorization codes for a third party (e.g. an "
        "insurer). The code is made here and shown once; only its hash is sent."
    ),
    no_args_is_help=True,
)
subject_key_app = typer.Typer(
    help="The hospital's subject key: the secret that turns pseudonyms into subject references.",
    no_args_is_help=True,
)
app.add_typer(consent_app, name="consent")
app.add_typer(authorization_app, name="authorization")
app.add_typer(subject_key_app, name="subject-key")

HolderOption = Annotated[str, typer.Option(help="The hospital (holder organization).")]
SubjectKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--subject-key",
        envvar="DUL_SUBJECT_KEY",
        help="Subject key file (default: DUL_HOME/keys/<holder>.subject-key).",
    ),
]
CONSENT_BATCH = 64
"""Consents per `recordConsents` transaction (well inside the per-transaction gas cap)."""


def _subject_key_path(holder: str, path: Path | None) -> Path:
    return path if path is not None else home().keys_dir / f"{holder}.subject-key"


def _subject_key(holder: str, path: Path | None, *, create: bool) -> bytes:
    from dul.subjects import SubjectError, load_subject_key, new_subject_key

    where = _subject_key_path(holder, path)
    try:
        if create and not where.exists():
            key = new_subject_key(where)
            err_console.print(
                f"note: created the subject key of {holder} at {where}; back it up — without it "
                "the same pseudonyms give other subject references"
            )
            return key
        if not where.exists():
            raise ConfigError(
                f"no subject key at {where}: create it with `dul steward subject-key new "
                f"--holder {holder}` (`dul steward consent grant` also creates it on first use), "
                "or name the hospital's own with --subject-key / DUL_SUBJECT_KEY",
                code="subject_key",
            )
        return load_subject_key(where)
    except SubjectError as exc:
        raise ConfigError(str(exc), code="subject_key") from None


def _refs(key: bytes, pseudonyms: list[str]) -> list[bytes]:
    from dul.subjects import SubjectError, subject_ref

    try:
        return [subject_ref(key, p) for p in pseudonyms]
    except SubjectError as exc:
        raise ConfigError(str(exc), code="invalid_pseudonym") from None


def _pseudonyms(given: list[str] | None, file: Path | None) -> list[str]:
    names = list(given or [])
    if file is not None:
        try:
            names += [line.strip() for line in file.read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror}", code="invalid_input") from None
    if not names:
        raise ConfigError("name at least one patient pseudonym", code="invalid_input")
    return names


def _print(out: dict[str, Any], json_output: bool) -> None:
    if json_output:
        emit_json(out)
    else:
        for key, value in out.items():
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            console.print(f"{key:<12}{shown}", highlight=False)


@subject_key_app.command("new")
@cli_errors
def subject_key_new(
    holder: HolderOption = "hospital-a",
    subject_key: SubjectKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create the hospital's subject key (never replaces one: references would change)."""
    from dul.subjects import SubjectError, new_subject_key

    where = _subject_key_path(holder, subject_key)
    try:
        new_subject_key(where)
    except SubjectError as exc:
        raise ConfigError(str(exc), code="subject_key") from None
    _print({"subject_key": str(where)}, json_output)


@consent_app.command("grant")
@cli_errors
def consent_grant(
    pseudonym: Annotated[list[str] | None, typer.Argument(help="Patient pseudonym(s).")] = None,
    pseudonyms_file: Annotated[
        Path | None, typer.Option(help="File with one pseudonym per line.")
    ] = None,
    holder: HolderOption = "hospital-a",
    scenario: Annotated[
        list[str] | None,
        typer.Option("--scenario", help="Permitted scenario, e.g. RESEARCH; repeat."),
    ] = None,
    duo: Annotated[list[str] | None, typer.Option("--duo", help="DUO code; repeat.")] = None,
    study: Annotated[
        list[str] | None,
        typer.Option(
            "--study",
            help=f"Only this study (agreement id); repeat, at most {MAX_SCOPE_ENTRIES}.",
        ),
    ] = None,
    requester: Annotated[
        list[str] | None,
        typer.Option(
            "--requester",
            help=f"Only this requesting organization; repeat, at most {MAX_SCOPE_ENTRIES}.",
        ),
    ] = None,
    disease: Annotated[
        str | None,
        typer.Option(
            help="Disease-specific (DUO:0000007): only studies whose agreement carries exactly "
            "this disease term, an ontology CURIE, e.g. MONDO:0007254."
        ),
    ] = None,
    days: Annotated[int, typer.Option(help="Validity from the start, in days.")] = 365,
    valid_from: Annotated[
        str | None, typer.Option("--from", help="Start, ISO date or unix seconds (default: now).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="End (ISO date or unix seconds).")] = None,
    patient_key: Annotated[
        str | None,
        typer.Option(help="The patient's own address, which may then withdraw by signature."),
    ] = None,
    subject_key: SubjectKeyOption = None,
    key: KeyOption = "steward",
    gateway: GatewayOption = None,
    token: TokenOption = "",
    wait: WaitOption = True,
    json_output: JsonOption = False,
) -> None:
    """Record patients' consent (signed here as the holder's steward, relayed by the gateway);
    --study, --requester and --disease make it a specific consent."""
    from dul.consent_terms import ConsentTerms, ScopeError, ascending
    from dul.domain import scenario_mask

    names = _pseudonyms(pseudonym, pseudonyms_file)
    scenarios = scenario_mask(*(_enum(Scenario, s, "scenario") for s in scenario or ["RESEARCH"]))
    start = 0 if valid_from is None else _time(valid_from, "--from")
    if until is not None:
        end = _time(until, "--until")
    else:
        end = (start or int(time.time())) + days * 86_400
    subject_address = "0x" + "00" * 20
    if patient_key is not None:
        if not (patient_key.startswith("0x") and len(patient_key) == 42):
            raise ConfigError(f"{patient_key!r} is not an address", code="invalid_input")
        subject_address = patient_key
    duo_codes = [_duo(d) for d in duo or []]
    disease_code = bytes(32)
    if disease is not None:
        disease_code = _disease(disease)
        if 7 not in duo_codes:
            duo_codes.append(7)  # DUO:0000007, disease-specific research
    try:
        studies = ascending((_bytes32(_agreement_id(s), "--study") for s in study or []), "study")
        requesters = ascending((_id32(r) for r in requester or []), "requester")
        scope = ConsentTerms(
            holder=bytes(32), subject=bytes(32), scenarios=scenarios, valid_until=end,
            duo_codes=tuple(duo_codes), disease_code=disease_code, studies=studies,
            requesters=requesters,
        ).check()  # fmt: skip
    except ScopeError as exc:
        raise ConfigError(str(exc), code="invalid_scope") from None
    refs = _refs(_subject_key(holder, subject_key, create=True), names)
    holder_id = _id32(holder)
    terms = [
        replace(
            scope, holder=holder_id, subject=ref, valid_from=start, subject_key=subject_address
        ).as_abi()
        for ref in refs
    ]
    h = home()
    ledger = open_ledger(h)
    signer = unlock(h, key)
    registry = ledger.deployment.address("ConsentRegistry")
    consent_ids: list[str] = []
    txs: list[str] = []
    with _gateway(gateway, token) as client:
        for offset in range(0, len(terms), CONSENT_BATCH):
            chunk = terms[offset : offset + CONSENT_BATCH]
            if len(chunk) == 1:
                data = function("ConsentRegistry", "recordConsent").encode(chunk[0])
            else:
                data = function("ConsentRegistry", "recordConsents").encode(chunk)
            answer = client.record_consents(
                sign_steward_call(ledger.w3, signer, registry, data), wait=wait
            )
            txs.append(answer.tx_hash)
            consent_ids += answer.consent_ids or []
    _print(
        {
            "subjects": ["0x" + r.hex() for r in refs],
            "consent_ids": consent_ids,
            "scenarios": [s.name for s in Scenario if scenarios >> s & 1],
            "duo_codes": [f"DUO:{c:07d}" for c in duo_codes],
            "studies": ["0x" + s.hex() for s in studies],
            "requesters": [slug_of(r) for r in requesters],
            "disease": disease_term(disease_code),
            "valid_until": end,
            "transactions": txs,
        },
        json_output,
    )


@consent_app.command("list")
@cli_errors
def consent_list(
    pseudonym: Annotated[str, typer.Argument(help="Patient pseudonym.")],
    holder: HolderOption = "hospital-a",
    subject_key: SubjectKeyOption = None,
    gateway: GatewayOption = None,
    token: TokenOption = "",
    json_output: JsonOption = False,
) -> None:
    """A patient's consents at the hospital, as the gateway sees the chain."""
    [ref] = _refs(_subject_key(holder, subject_key, create=False), [pseudonym])
    with _gateway(gateway, token) as client:
        found = client.consents(ref)
    if json_output:
        emit_json(found.model_dump())
        return
    console.print(f"subject {found.subject} at {found.holder}", highlight=False)
    for c in found.consents:
        state = c.status + (" (withdrawal pending)" if c.withdrawal_pending else "")
        state += ", in force" if c.in_force else ""
        scope = "".join(
            [f"  study {s}" for s in c.studies]
            + [f"  requester {r}" for r in c.requesters]
            + ([f"  disease {c.disease}"] if c.disease else [])
        )
        console.print(
            f"{c.consent_id}  {state}  {', '.join(c.scenarios)} {' '.join(c.duo_codes)}  "
            f"{_date(c.valid_from)} .. {_date(c.valid_until)}{scope}",
            highlight=False,
        )
    if not found.consents:
        console.print("no consent recorded", highlight=False)


@consent_app.command("withdraw")
@cli_errors
def consent_withdraw(
    pseudonym: Annotated[str, typer.Argument(help="Patient pseudonym.")],
    consent: Annotated[
        str | None,
        typer.Option("--consent", help="Only this consent id (default: every granted one)."),
    ] = None,
    holder: HolderOption = "hospital-a",
    subject_key: SubjectKeyOption = None,
    key: KeyOption = "steward",
    gateway: GatewayOption = None,
    token: TokenOption = "",
    wait: WaitOption = True,
    json_output: JsonOption = False,
) -> None:
    """Withdraw a patient's consent (each granted one, or --consent); in force at once for the
    gateway's decisions, and on chain once mined."""
    [ref] = _refs(_subject_key(holder, subject_key, create=False), [pseudonym])
    h = home()
    ledger = open_ledger(h)
    signer = unlock(h, key)
    registry = ledger.deployment.address("ConsentRegistry")
    withdrawn: list[str] = []
    with _gateway(gateway, token) as client:
        if consent is not None:
            ids = [_bytes32(consent, "--consent")]
        else:
            listed = client.consents(ref).consents
            ids = [
                bytes.fromhex(c.consent_id[2:])
                for c in listed
                if c.status == "GRANTED" and not c.withdrawal_pending
            ]
        if not ids:
            raise DulError("the patient has no granted consent here", code="nothing_to_withdraw")
        for consent_id in ids:
            data = function("ConsentRegistry", "withdrawConsent").encode(consent_id)
            raw = sign_steward_call(ledger.w3, signer, registry, data)
            answer = client.withdraw_consent(ref, raw, wait=wait)
            withdrawn.append(answer.consent_id)
    _print({"subject": "0x" + ref.hex(), "withdrawn": withdrawn}, json_output)


@authorization_app.command("issue")
@cli_errors
def authorization_issue(
    pseudonym: Annotated[str, typer.Argument(help="Patient pseudonym.")],
    grantee: Annotated[str, typer.Option(help="The organization the patient authorizes.")],
    holder: HolderOption = "hospital-a",
    dataset: Annotated[str, typer.Option(help="Dataset the code opens.")] = "hospital-a/omop-cdm",
    field: Annotated[
        list[str] | None, typer.Option("--field", help="Field name or index; repeat.")
    ] = None,
    field_mask: Annotated[str | None, typer.Option(help="Field bit set, e.g. 0x1e.")] = None,
    tier: Annotated[str, typer.Option(help="Most sensitive tier allowed.")] = "PSEUDONYMIZED",
    scenario: Annotated[str, typer.Option(help="Scenario.")] = "INSURANCE_CLAIM",
    days: Annotated[int, typer.Option(help="Valid for this many days.")] = 30,
    multi_use: Annotated[
        bool,
        typer.Option(
            "--multi-use/--once",
            help="Usable by every fitting access of GRANTEE until it expires (default: once).",
        ),
    ] = False,
    subject_key: SubjectKeyOption = None,
    key: KeyOption = "steward",
    gateway: GatewayOption = None,
    token: TokenOption = "",
    wait: WaitOption = True,
    json_output: JsonOption = False,
) -> None:
    """Issue a code for GRANTEE to this patient's data: one access, or with --multi-use every
    fitting access until it expires. The code is printed once (hand it to the patient); the
    chain and the gateway get only its hash."""
    from dul.subjects import code_hash, new_authorization_code

    [ref] = _refs(_subject_key(holder, subject_key, create=True), [pseudonym])
    h = home()
    ledger = open_ledger(h)
    dataset_id = _id32(dataset)
    if field_mask is not None:
        mask = int(field_mask, 0)
    else:
        mask = _mask({"fields": _field_items(field or [])}, dataset_id, ledger)
    expires = int(time.time()) + days * 86_400
    code = new_authorization_code()
    digest = code_hash(code)
    authorization = (
        _id32(holder),
        ref,
        _id32(grantee),
        dataset_id,
        mask,
        int(_enum(Tier, tier, "tier")),
        int(_enum(Scenario, scenario, "scenario")),
        0,
        expires,
        multi_use,
        bytes(32),
    )
    data = function("ConsentRegistry", "issueAuthorization").encode(digest, authorization)
    raw = _signed(h, ledger, key, "ConsentRegistry", data)
    with _gateway(gateway, token) as client:
        answer = client.issue_authorization(raw, wait=wait)
    _print(
        {
            "code": code,
            "code_hash": "0x" + digest.hex(),
            "subject": "0x" + ref.hex(),
            "grantee": grantee,
            "expires_at": expires,
            "multi_use": multi_use,
            "status": answer.status,
            "tx_hash": answer.tx_hash,
        },
        json_output,
    )
    if not json_output:
        err_console.print("the code is shown only now: hand it to the patient")


@authorization_app.command("revoke")
@cli_errors
def authorization_revoke(
    code: Annotated[str, typer.Argument(help="The code, or its 0x hash.")],
    key: KeyOption = "steward",
    gateway: GatewayOption = None,
    token: TokenOption = "",
    wait: WaitOption = True,
    json_output: JsonOption = False,
) -> None:
    """Revoke an unredeemed authorization code (a steward of its holder)."""
    from dul.subjects import SubjectError, code_hash

    if code.startswith("0x") and len(code) == 66:
        digest = _bytes32(code, "code hash")
    else:
        try:
            digest = code_hash(code)
        except SubjectError as exc:
            raise ConfigError(str(exc), code="invalid_code") from None
    h = home()
    ledger = open_ledger(h)
    data = function("ConsentRegistry", "revokeAuthorization").encode(digest)
    raw = _signed(h, ledger, key, "ConsentRegistry", data)
    with _gateway(gateway, token) as client:
        answer = client.revoke_authorization(digest, raw, wait=wait)
    _print(
        {"code_hash": "0x" + digest.hex(), "status": answer.status, "tx_hash": answer.tx_hash},
        json_output,
    )


@app.command("patient-key")
@cli_errors
def patient_key(
    pseudonym: Annotated[str, typer.Argument(help="Patient pseudonym.")],
    address: Annotated[
        str | None, typer.Option(help="The patient's own wallet address (0x…, 20 bytes).")
    ] = None,
    remove: Annotated[bool, typer.Option(help="Remove the registered key instead.")] = False,
    holder: HolderOption = "hospital-a",
    subject_key: SubjectKeyOption = None,
    key: KeyOption = "steward",
    gateway: GatewayOption = None,
    token: TokenOption = "",
    wait: WaitOption = True,
    json_output: JsonOption = False,
) -> None:
    """Register (or rotate to) the key whose EIP-712 signatures issue and revoke this patient's
    authorization codes (`ConsentRegistry.registerSubjectKey`), with or without any consent;
    `--remove` removes it."""
    if remove == (address is not None):
        raise ConfigError("give either --address or --remove", code="invalid_input")
    patient = "0x" + "00" * 20
    if address is not None:
        if not (address.startswith("0x") and len(address) == 42):
            raise ConfigError(f"{address!r} is not an address", code="invalid_input")
        try:
            bytes.fromhex(address[2:])
        except ValueError:
            raise ConfigError(f"{address!r} is not an address", code="invalid_input") from None
        if int(address, 16) == 0:
            raise ConfigError("the zero address is --remove", code="invalid_input")
        patient = address
    [ref] = _refs(_subject_key(holder, subject_key, create=False), [pseudonym])
    h = home()
    ledger = open_ledger(h)
    data = function("ConsentRegistry", "registerSubjectKey").encode(_id32(holder), ref, patient)
    raw = _signed(h, ledger, key, "ConsentRegistry", data)
    with _gateway(gateway, token) as client:
        answer = client.register_subject_key(ref, raw, wait=wait)
    _print(
        {
            "subject": "0x" + ref.hex(),
            "patient_key": None if remove else patient,
            "status": answer.status,
            "tx_hash": answer.tx_hash,
        },
        json_output,
    )


@app.command("patient-token")
@cli_errors
def patient_token(
    pseudonym: Annotated[str, typer.Argument(help="Patient pseudonym.")],
    holder: HolderOption = "hospital-a",
    minutes: Annotated[
        int,
        typer.Option(
            min=1,
            max=1440,
            help="Lifetime in minutes (the audit service's "
            "limit, DUL_AUDIT_PATIENT_TOKEN_MAX_S, is 60 by default).",
        ),
    ] = 15,
    subject_key: SubjectKeyOption = None,
    key: KeyOption = "steward",
    json_output: JsonOption = False,
) -> None:
    """A short-lived token with which this patient reads their own transparency report at the
    audit service (GET /v1/subjects/{ref}/accesses), signed here with the steward's key
    (EIP-712 PatientToken); nothing is sent anywhere. Hand it to the patient once they are
    authenticated by the hospital."""
    from dul.contracts.deployment import Deployment
    from dul.patient_tokens import PatientToken, patient_token_domain

    [ref] = _refs(_subject_key(holder, subject_key, create=False), [pseudonym])
    h = home()
    deployment = Deployment.load(h.deployment)
    domain = patient_token_domain(deployment.chain_id, deployment.address("Membership"))
    now = int(time.time())
    token = PatientToken(ref, _id32(holder), now, now + minutes * 60).signed(unlock(h, key), domain)
    _print(
        {
            "subject": "0x" + ref.hex(),
            "holder": holder,
            "expires_at": token.expires_at,
            "token": token.encode(),
        },
        json_output,
    )


# --------------------------------------------------------------------------- break-glass

break_glass_app = typer.Typer(
    help=(
        "Review emergency (break-glass) accesses to your patients' records: each must be "
        "reviewed by a steward of the hospital within its agreement's review window."
    ),
    no_args_is_help=True,
)
app.add_typer(break_glass_app, name="break-glass")

BREAK_GLASS_TOPIC = event("AccessLog", "BreakGlassAccess").topic
FINDING_MAX = 20_000
"""Characters of a written finding (kept by the hospital; only its hash goes on chain)."""


def _break_glass_agreement(ledger: Ledger, access: bytes, agreement: bytes | None) -> bytes:
    """The agreement of break-glass access `access`, from its `BreakGlassAccess` events. An
    access is named by its agreement and request id: when the id broke glass under several
    agreements, `agreement` (`--agreement`) says which."""
    topics = ["0x" + BREAK_GLASS_TOPIC.hex(), "0x" + access.hex()]
    if agreement is not None:
        topics.append("0x" + agreement.hex())
    logs = ledger.find_logs(
        {"address": ledger.deployment.address("AccessLog"), "topics": topics},
        first_match=agreement is not None,
    )
    # agreementId is the second indexed argument
    found = sorted({bytes(entry["topics"][2]) for entry in logs})
    if not found:
        under = "" if agreement is None else f" under agreement 0x{agreement.hex()}"
        raise ConfigError(
            f"access 0x{access.hex()} is no break-glass access{under} on this ledger",
            code="not_break_glass",
        )
    if len(found) > 1:
        raise ConfigError(
            f"access 0x{access.hex()} broke glass under {len(found)} agreements "
            f"({', '.join('0x' + a.hex() for a in found)}); name one with --agreement",
            code="ambiguous_access",
        )
    return found[0]


@break_glass_app.command("review")
@cli_errors
def break_glass_review(
    access: Annotated[str, typer.Argument(help="The break-glass access id (0x…).")],
    outcome: Annotated[
        str,
        typer.Option(help="UPHELD (the emergency justified it) or REFERRED (to the regulator)."),
    ],
    finding: Annotated[
        str,
        typer.Option(help="The review's written finding; only its keccak256 goes on chain."),
    ],
    agreement: Annotated[
        str | None,
        typer.Option(
            help="The access's agreement (0x…); needed only when the request id broke glass "
            "under more than one agreement."
        ),
    ] = None,
    key: KeyOption = "steward",
    gateway: GatewayOption = None,
    token: TokenOption = "",
    wait: WaitOption = True,
    json_output: JsonOption = False,
) -> None:
    """Record your review of a break-glass access (a steward of the holder), relayed through
    the gateway: upheld, or referred to the regulator."""
    from dul.domain import BreakGlassOutcome

    access_id = _bytes32(access, "access id")
    chosen = _enum(BreakGlassOutcome, outcome.upper(), "outcome")
    if chosen == BreakGlassOutcome.NONE:
        raise ConfigError("outcome must be UPHELD or REFERRED", code="invalid_outcome")
    text = finding.strip()
    if not text or len(text) > FINDING_MAX:
        raise ConfigError(
            f"the finding must be 1 to {FINDING_MAX} characters", code="invalid_finding"
        )
    h = home()
    ledger = open_ledger(h)
    named = None if agreement is None else _bytes32(agreement, "agreement id")
    agreement_id = _break_glass_agreement(ledger, access_id, named)
    finding_hash = keccak(text.encode())
    data = function("AccessLog", "reviewBreakGlass").encode(
        access_id, agreement_id, int(chosen), finding_hash
    )
    raw = _signed(h, ledger, key, "AccessLog", data)
    with _gateway(gateway, token) as client:
        answer = client.review_break_glass("0x" + access_id.hex(), raw, wait=wait)
    _relayed(answer, json_output, outcome=chosen.name, finding_hash="0x" + finding_hash.hex())
