"""Geometry: conversions, rigid-transform linalg, 2-D transforms and warps, homography
estimation (issue 3; being filled in)."""
