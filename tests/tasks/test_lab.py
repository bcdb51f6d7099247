import numpy as np
import pytest
import torch

from sslstudio.tasks.lab import (BIN_SIZE, EXPECTED_GAMUT_BINS, annealed_mean, gamut_bins, lab_to_linear,
                                 lab_to_rgb, lab_to_rgb_np, nearest_bins, rgb_to_lab, rgb_to_lab_np,
                                 soft_encode)


def test_round_trip_on_random_colours():
    rgb = torch.rand(5000, 3, generator=torch.Generator().manual_seed(0))
    back = lab_to_rgb(rgb_to_lab(rgb, dim=-1), dim=-1)
    assert (back - rgb).abs().max().item() < 1e-4
    # the same in float64 and with channels first
    img = torch.rand(3, 8, 8, dtype=torch.float64)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(img)), img, atol=1e-10)


@pytest.mark.parametrize("rgb, lab", [
    ((255, 255, 255), (100.0, 0.0, 0.0)),
    ((0, 0, 0), (0.0, 0.0, 0.0)),
    ((255, 0, 0), (53.24, 80.09, 67.20)),
    ((0, 255, 0), (87.73, -86.18, 83.18)),
    ((0, 0, 255), (32.30, 79.19, -107.86)),
])
def test_known_values(rgb, lab):
    got = rgb_to_lab_np(np.array(rgb, dtype=np.uint8))
    assert np.allclose(got, lab, atol=0.01), got


def test_greys_have_no_chroma_and_numpy_matches_torch():
    greys = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    lab = rgb_to_lab_np(greys)
    assert np.abs(lab[:, 1:]).max() < 1e-4
    assert np.all(np.diff(lab[:, 0]) > 0)  # lightness grows with the grey level
    colours = np.random.default_rng(1).random((64, 3)).astype(np.float32)
    assert np.allclose(lab_to_rgb_np(rgb_to_lab_np(colours)), colours, atol=1e-4)


def test_in_gamut_bin_count_is_the_documented_number():
    centres = gamut_bins()
    assert len(centres) == EXPECTED_GAMUT_BINS == 313
    assert np.all(np.mod(centres, BIN_SIZE) == 0)
    assert len({tuple(c) for c in centres}) == len(centres)
    assert (0.0, 0.0) in {tuple(c) for c in centres}
    assert (centres[:, 0].min(), centres[:, 0].max()) == (-90.0, 100.0)
    assert (centres[:, 1].min(), centres[:, 1].max()) == (-110.0, 100.0)


def test_every_srgb_colour_falls_in_a_kept_bin_and_far_bins_are_out():
    centres = {tuple(c) for c in gamut_bins()}
    rgb = np.random.default_rng(2).integers(0, 256, (20000, 3), dtype=np.uint8)
    ab = rgb_to_lab_np(rgb)[:, 1:].astype(np.float64)
    binned = np.floor(ab / BIN_SIZE + 0.5) * BIN_SIZE
    assert all(tuple(b) in centres for b in binned)
    # saturated magenta-green corners that no sRGB colour reaches
    assert (100.0, -100.0) not in centres and (-90.0, -110.0) not in centres
    # out-of-gamut check of the criterion: a kept bin's centre region is reachable at some L
    L = torch.linspace(0, 100, 101)
    lin = lab_to_linear(torch.stack([L, torch.full_like(L, 0.0), torch.full_like(L, -40.0)], -1), dim=-1)
    assert ((lin >= 0) & (lin <= 1)).all(-1).any()


def test_soft_encoding_sums_to_one_uses_the_five_nearest_and_peaks_at_the_nearest():
    centres = torch.from_numpy(gamut_bins())
    ab = torch.tensor([[3.0, -7.0], [41.0, 13.2], [0.0, 0.0], [-56.0, 33.0]])  # no ties
    w, idx = soft_encode(ab, centres, k=5, sigma=5.0)
    assert w.shape == idx.shape == (4, 5)
    assert torch.allclose(w.sum(1), torch.ones(4))
    d2 = ((ab[:, None, :] - centres[None]) ** 2).sum(-1)
    for p in range(4):  # the 5 chosen bins are 5 nearest ones (ties may be broken either way)
        assert torch.allclose(d2[p, idx[p]], torch.sort(d2[p]).values[:5])
        assert int(idx[p, 0]) == int(torch.argmin(d2[p]))
        assert int(torch.argmax(w[p])) == 0
        # Gaussian ratios: w_k / w_0 = exp(-(d_k^2 - d_0^2) / (2 sigma^2))
        dk = d2[p, idx[p]]
        assert torch.allclose(w[p] / w[p, 0], torch.exp(-(dk - dk[0]) / 50.0), atol=1e-5)
    # a point on a bin centre keeps most weight there
    assert w[2, 0] > 0.5


def test_nearest_bin_of_a_centre_is_itself():
    centres = torch.from_numpy(gamut_bins())
    _, idx = nearest_bins(centres + 0.3, centres)
    assert torch.equal(idx[:, 0], torch.arange(len(centres)))


def test_annealed_mean_of_one_hot_is_the_bin_centre_and_t1_is_the_mean():
    centres = torch.from_numpy(gamut_bins())
    q = len(centres)
    logits = torch.full((1, q, 2, 2), -1e4)
    logits[0, 17, :, :] = 0.0
    ab = annealed_mean(logits, centres, 0.38)
    assert ab.shape == (1, 2, 2, 2)
    assert torch.allclose(ab[0, :, 0, 0], centres[17], atol=1e-4)
    uniform = annealed_mean(torch.zeros(1, q, 1, 1), centres, 1.0)
    assert torch.allclose(uniform[0, :, 0, 0], centres.mean(0), atol=1e-4)
    # a lower temperature moves the estimate towards the mode
    two = torch.full((1, q, 1, 1), -1e4)
    two[0, 0], two[0, q - 1] = 1.0, 0.0
    cold = annealed_mean(two, centres, 0.1)[0, :, 0, 0]
    warm = annealed_mean(two, centres, 1.0)[0, :, 0, 0]
    assert (cold - centres[0]).norm() < (warm - centres[0]).norm()
