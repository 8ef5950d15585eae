"""A plugin whose import fails, as one does when a dependency is missing."""

raise ImportError("rlhfx-broken needs the 'frobnicate' package, which is not installed")
