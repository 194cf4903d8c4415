"""Transforms: build derived graphs (gradient, later HVP, GN, CP...) in the same IR."""
