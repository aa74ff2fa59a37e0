"""`dul up` says why it starts no gateway instead of starting none silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from dul import stack
from dul.chain.node import ChainNode
from dul.home import Home
from dul.keys import KeyStore


def test_a_missing_gateway_key_is_named_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DUL_GATEWAY_ORG", "hospital-z")
    monkeypatch.setenv("DUL_GATEWAY_KEY", "hospital-z.gateway")
    home = Home(tmp_path).ensure()
    skipped: dict[str, str] = {}
    node = ChainNode(home)  # not started: no gateway, so no token is made
    started = stack._start_gateways(home, KeyStore(home), node, demo=False, skipped=skipped)
    assert started == {}
    assert list(skipped) == ["hospital-z"]
    assert "dul keys new hospital-z.gateway" in skipped["hospital-z"]
    assert "DUL_GATEWAY_ORG" in skipped["hospital-z"]
