"""Multi-view depth estimation by gradient descent from calibrated views (see DESIGN.md)."""
