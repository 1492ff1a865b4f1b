"""Temporal SDF: (t, x, y, z) -> signed distance, positive outside."""
