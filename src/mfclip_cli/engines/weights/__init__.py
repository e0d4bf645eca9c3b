"""The weights registry: the bundled demo, the per-user store, and downloads into it."""
