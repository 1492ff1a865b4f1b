"""Pieces every task shares: metrics, media, cameras, mesh sequences, the training loop."""
