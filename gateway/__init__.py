"""Sluice gateway: the OpenAI-compatible caching front door."""
