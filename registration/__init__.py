"""Multi-scale homography registration by gradient descent (see DESIGN.md; issue 5)."""
