"""Engines run batches of generation rows on a model (torch, vLLM)."""
