"""Multi-scale homography registration by gradient descent, built on :mod:`gradcv.optim`
(see DESIGN.md)."""

from gradcv.optim import SolverStatus
from gradcv.registration.config import RegistrationConfig
from gradcv.registration.data import corner_error, make_pairs
from gradcv.registration.solver import HomographyRegistration, RegistrationResult, register_homography
from gradcv.registration.uncertainty import corner_uncertainty

__all__ = [
    "HomographyRegistration",
    "RegistrationConfig",
    "RegistrationResult",
    "SolverStatus",
    "corner_error",
    "corner_uncertainty",
    "make_pairs",
    "register_homography",
]
