"""Audit service: index the chain, rebuild provenance, verify integrity."""
