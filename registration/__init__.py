"""Multi-scale homography registration by gradient descent (see DESIGN.md; issue 5)."""

from registration.config import RegistrationConfig
from registration.data import corner_error, make_pairs
from registration.solver import HomographyRegistration, RegistrationResult, register_homography

__all__ = [
    "HomographyRegistration",
    "RegistrationConfig",
    "RegistrationResult",
    "corner_error",
    "make_pairs",
    "register_homography",
]
