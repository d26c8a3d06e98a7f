"""The photometric protocol of make_pairs, the torch JPEG against libjpeg (Pillow, OpenCV),
the photometric model of the objective (gain and bias recovered, identity exact) and the
masks in the converged flag's overlap test."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from gradcv.optim import SolverStatus
from gradcv.registration import RegistrationConfig, corner_error, make_pairs, register_homography
from gradcv.registration.data import BIAS, GAIN
from gradcv.registration.imaging import expose, jpeg, quantisation_table
from gradcv.registration.objective import fit_photometric, photometric_columns, photometric_gram, photometric_solve
from tests.helpers import to_tensor
from tests.registration._pairs import exact, gray, on


@pytest.fixture(scope="module")
def photo(photos):
    return gray(photos[1])[0]  # coffee, (1, 400, 600)


def test_photometric_protocol_is_the_full_geometry(photo):
    """Same src and H as the full-image protocol for the same seed and rho; dst changed."""
    src, dst, H = make_pairs(photo[None], 6, protocol="photometric", seed=2)
    assert src.shape == (6, 1, 256, 256)
    full = make_pairs(photo[None], 6, protocol="full", rho=24, seed=2)
    assert torch.equal(src, full[0]) and torch.equal(H, full[2])
    assert (dst - full[1]).abs().mean((1, 2, 3)).min() > 1e-3
    assert 0 <= float(dst.min()) and float(dst.max()) <= 1
    again = make_pairs(photo[None], 6, protocol="photometric", seed=2)
    assert all(torch.equal(a, b) for a, b in zip((src, dst, H), again))
    assert not torch.equal(dst, make_pairs(photo[None], 6, protocol="photometric", seed=3)[1])


def test_photometric_protocol_ranges(photo):
    """Each pair's dst is an affine function of the full protocol's dst up to the
    protocol's nonlinear changes: the fitted gain and bias fall in the drawn ranges (widened
    by what gamma, clamping, noise, blur and JPEG add), the corners move at most 24 px, and
    about a third of the pairs are 8-bit JPEG output."""
    n = 24
    _, dst, H = make_pairs(photo[None], n, protocol="photometric", seed=0)
    _, ref, _ = make_pairs(photo[None], n, protocol="full", rho=24, seed=0)
    x, y = ref.flatten(1).double(), dst.flatten(1).double()
    xc = x - x.mean(1, keepdim=True)
    gain = (xc * (y - y.mean(1, keepdim=True))).sum(1) / xc.square().sum(1)
    assert GAIN[0] * 0.6 < float(gain.min()) and float(gain.max()) < GAIN[1] * 1.6
    assert float(gain.std()) > 0.05  # the gains differ from pair to pair
    c = torch.tensor([[0.0, 0.0, 1.0], [255.0, 0.0, 1.0], [255.0, 255.0, 1.0], [0.0, 255.0, 1.0]], dtype=torch.float64)
    p = c @ torch.linalg.inv(H).transpose(-1, -2)
    assert (p[..., :2] / p[..., 2:] - c[:, :2]).abs().max() <= 24 + 1e-9
    quantised = ((dst * 255 - (dst * 255).round()).abs().flatten(1).amax(1) < 1e-4).sum()
    assert 3 <= int(quantised) <= 14
    assert BIAS == (-0.08, 0.08)


def test_expose_is_the_documented_change(device):
    g = torch.Generator().manual_seed(0)  # a CPU generator draws the noise on any device
    x = torch.rand(1, 20, 24).to(device)
    out = expose(x, gamma=1.2, gain=0.9, bias=0.05, noise=0.0, blur=0.0, quality=0, generator=g)
    torch.testing.assert_close(out, (0.9 * x**1.2 + 0.05).clamp(0, 1))
    noisy = expose(x, gamma=1.0, gain=1.0, bias=0.0, noise=0.01, blur=0.0, quality=0, generator=g)
    assert 0.005 < float((noisy - x).std()) < 0.015
    assert noisy.device == x.device


@pytest.mark.parametrize("quality", [50, 75, 90])
@pytest.mark.parametrize("library", ["pillow", "opencv"])
def test_jpeg_matches_libjpeg(photos, quality, library, device):
    """Our baseline JPEG round trip against libjpeg's on an odd-sized crop: the same error
    against the input (within 3 %) and within a level of it on average."""
    img = np.round(photos[0][:203, :157] @ np.array([0.299, 0.587, 0.114], dtype=np.float32) * 255).astype(np.uint8)
    if library == "pillow":
        Image = pytest.importorskip("PIL.Image")
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=quality)
        ref = np.asarray(Image.open(buf)).astype(np.float64)
    else:
        cv2 = pytest.importorskip("cv2")
        ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        ref = cv2.imdecode(enc, 0).astype(np.float64)
    ours = on(device, jpeg, to_tensor(img.astype(np.float32) / 255), quality)[0, 0].double().numpy() * 255
    assert np.abs(ours - ref).mean() < 0.25
    assert np.abs(ours - ref).max() <= 8
    ours_err, ref_err = np.abs(ours - img).mean(), np.abs(ref - img).mean()
    assert abs(ours_err - ref_err) < 0.03 * ref_err and ref_err > 0.1


def test_jpeg_table_and_bad_quality():
    assert quantisation_table(50)[0, 0] == 16 and quantisation_table(100).max() == 1
    assert quantisation_table(10)[0, 0] == 80
    with pytest.raises(ValueError, match="quality"):
        jpeg(torch.rand(1, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="images"):
        jpeg(torch.rand(8, 8), 50)


def test_fit_recovers_gain_and_bias(photo, device):
    """On a synthetic pair dst = 1.2 src - 0.05, the fit returns exactly that model and the
    fitted residual vanishes; zero residual gives exactly zero coefficients."""
    src = photo[None, :, :64, :80].double().to(device)
    weight = torch.ones_like(src)
    dst = 1.2 * src - 0.05
    phi = photometric_columns("gain_bias", src)
    c = photometric_solve(*photometric_gram(phi, weight, dst - src))
    # gain column is src - 0.5: dst - src = 0.2 (src - 0.5) + (0.1 - 0.05)
    torch.testing.assert_close(c.cpu(), torch.tensor([[0.2, 0.05]], dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(fit_photometric("exposure", src, dst, weight), dst, atol=1e-6, rtol=0)
    same = fit_photometric("exposure", src.float(), src.float(), weight.float())
    assert exact(same.cpu(), src.float().cpu(), device)


@pytest.mark.parametrize("method", ["levenberg_marquardt", "first_order"])
def test_registration_under_gain_and_bias(photos, method, device):
    """A shift plus an exposure change (gain 0.75, bias 0.06): recovered to a tenth of a
    pixel with the photometric model, not without it (the preset's objective)."""
    canvas = gray(photos[0])[..., 100:260, 100:260]
    H = torch.tensor([[1.0, 0.0, 2.5], [0.0, 1.0, -1.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    from tests.registration._pairs import warped_pair

    src, dst = warped_pair(canvas, H, 16, 16, (128, 128))
    dst = 0.75 * dst + 0.06
    base = RegistrationConfig.default(levels=3) if method != "first_order" else RegistrationConfig.first_order(iterations=100)
    err = corner_error(on(device, register_homography, src, dst, config=base).homography.double(), H[None], (128, 128))
    assert float(err) < 0.1
    if method != "first_order":
        none = on(device, register_homography, src, dst, config=base.replace(photometric="none", loss="l2"))
        assert float(corner_error(none.homography.double(), H[None], (128, 128))) > 2 * float(err)


def test_converged_overlap_respects_masks(photos, device):
    """A pair that overlaps fully but whose masks leave almost nothing to compare is
    DEGENERATE_INPUT, not CONVERGED; with masks that leave most, it converges."""
    x = gray(photos[0])[..., 200:296, 200:296].contiguous()
    keep = torch.zeros(1, 1, 96, 96)
    keep[..., :4, :4] = 1.0
    result = on(device, register_homography, x, x, src_mask=keep, dst_mask=keep, levels=2, search_steps=0)
    assert int(result.status[0]) == int(SolverStatus.DEGENERATE_INPUT)
    keep[..., :80, :] = 1.0
    result = on(device, register_homography, x, x, src_mask=keep, dst_mask=keep, levels=2, search_steps=0)
    assert bool(result.converged[0])


def test_photometric_field_validated_and_presets():
    assert RegistrationConfig().photometric == "exposure" and RegistrationConfig.paper().photometric == "none"
    assert RegistrationConfig.first_order().photometric == "exposure"
    with pytest.raises(ValueError, match="photometric"):
        RegistrationConfig(photometric="ecc")
    with pytest.raises(TypeError, match="photometric"):
        RegistrationConfig(photometric=1)
