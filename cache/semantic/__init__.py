"""The semantic side of the cache: which questions can be matched by meaning, and how."""
