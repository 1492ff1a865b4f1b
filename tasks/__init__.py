"""The paper's tasks (video, temporal SDF, scene flow, dynamic NeRF): not implemented yet (issues 4 and 5)."""
