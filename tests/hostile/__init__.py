"""Hostile input: generated and hand-written requests that must never break the API."""
