"""Dynamic NeRF from a few RGB(-D) views: multi-view video data, readers and the embedded bunny scene."""
