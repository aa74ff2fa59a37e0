"""The gateway's REST API: one router per resource, mounted by `ledger_gateway.app`."""
