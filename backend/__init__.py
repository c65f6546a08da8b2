"""Sluice backend: a batching LLM server. Knows nothing of caching."""
