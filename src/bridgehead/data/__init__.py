"""Datasets: versions, profiles, contracts, lineage, PII tags and access policies."""
