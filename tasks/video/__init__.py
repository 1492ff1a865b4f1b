"""2D video approximation: (t, y, x) -> RGB."""
