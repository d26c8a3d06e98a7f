"""RegistrationConfig: plain (no tensors), comparable, serialisable, validated completely
with typed errors that name the field."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from gradcv.registration import RegistrationConfig

PRESETS = ["default", "second_order", "first_order", "paper"]


@pytest.mark.parametrize("preset", PRESETS)
def test_json_round_trip_and_equality(preset):
    cfg = getattr(RegistrationConfig, preset)(optimizer_kwargs={"momentum": 0.9}, optimizer="SGD")
    text = json.dumps(dataclasses.asdict(cfg))
    again = RegistrationConfig(**json.loads(text))
    assert again == cfg and again is not cfg
    assert again != cfg.replace(levels=cfg.levels + 1)


def test_fields_are_plain_data():
    """No tensor (mask, initial homography) lives in the config: data are call arguments."""
    names = {f.name for f in dataclasses.fields(RegistrationConfig)}
    assert not names & {"src_mask", "dst_mask", "initial_homography"}
    for value in dataclasses.asdict(RegistrationConfig()).values():
        assert isinstance(value, (str, int, float, bool, dict)) and not isinstance(value, torch.Tensor)


def test_presets_differ_and_replace_validates():
    configs = [getattr(RegistrationConfig, p)() for p in PRESETS]
    assert len({json.dumps(dataclasses.asdict(c), sort_keys=True) for c in configs}) == 4
    assert RegistrationConfig.paper(levels=4).levels == 4
    with pytest.raises(TypeError, match="nope"):
        RegistrationConfig().replace(nope=1)
    with pytest.raises(ValueError, match="levels"):
        RegistrationConfig().replace(levels=0)


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("blur_sigma", -1.0, ValueError),
        ("blur_sigma", math.nan, ValueError),
        ("blur_sigma", "0.8", TypeError),
        ("patience", 2.5, TypeError),
        ("patience", True, TypeError),
        ("patience", 0, ValueError),
        ("levels", 2.0, TypeError),
        ("levels", False, TypeError),
        ("iterations", 0, ValueError),
        ("min_size", 1, ValueError),
        ("search_steps", 1.5, TypeError),
        ("search_steps", -1, ValueError),
        ("min_texture", math.nan, ValueError),
        ("min_texture", -0.1, ValueError),
        ("tolerance", math.inf, ValueError),
        ("tolerance", -1e-6, ValueError),
        ("step_tolerance", math.nan, ValueError),
        ("lr", 0.0, ValueError),
        ("lr", math.nan, ValueError),
        ("lr", True, TypeError),
        ("final_lr_ratio", 0.0, ValueError),
        ("final_lr_ratio", 1.5, ValueError),
        ("charbonnier_eps", 0.0, ValueError),
        ("search_range", -2.0, ValueError),
        ("search_range", math.inf, ValueError),
        ("symmetric", 1, TypeError),
        ("differentiable", "yes", TypeError),
        ("method", "newton", ValueError),
        ("method", 3, TypeError),
        ("loss", "l3", ValueError),
        ("coarse_loss", "ssim", ValueError),
        ("motion", "projective", ValueError),
        ("schedule", "linear", ValueError),
        ("optimizer", "NoSuchOptimizer", ValueError),
        ("optimizer", None, TypeError),
        ("optimizer_kwargs", {"lr": 0.1}, ValueError),
        ("optimizer_kwargs", {"eps": math.nan}, ValueError),
        ("optimizer_kwargs", [("momentum", 0.9)], TypeError),
    ],
)
def test_every_field_validated(field, value, error):
    with pytest.raises(error, match=field):
        RegistrationConfig(**{field: value})
    with pytest.raises(error, match=field):
        RegistrationConfig().replace(**{field: value})


def test_cross_field_rules():
    with pytest.raises(ValueError, match="loss"):
        RegistrationConfig(loss="ssim")  # the second-order default needs a sum of squares
    assert RegistrationConfig.first_order(loss="ssim").loss == "ssim"
    with pytest.raises(ValueError, match="optimizer"):
        RegistrationConfig.first_order(optimizer="LBFGS", differentiable=True)
    assert RegistrationConfig.first_order(optimizer="SGD", differentiable=True).differentiable


def test_ints_are_accepted_where_floats_belong():
    cfg = RegistrationConfig(blur_sigma=1, search_range=8, tolerance=0)
    assert cfg.blur_sigma == 1 and cfg == RegistrationConfig(blur_sigma=1.0, search_range=8.0, tolerance=0.0)
