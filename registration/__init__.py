"""Multi-scale homography registration by gradient descent (see DESIGN.md; issue 5)."""

from gradcv.registration.config import RegistrationConfig
from gradcv.registration.data import corner_error, make_pairs
from gradcv.registration.solver import HomographyRegistration, RegistrationResult, register_homography

__all__ = [
    "HomographyRegistration",
    "RegistrationConfig",
    "RegistrationResult",
    "corner_error",
    "make_pairs",
    "register_homography",
]
