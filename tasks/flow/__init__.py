"""Scene flow: (t, x, y, z) -> displacement to the next and the previous frame."""
