"""sRGB <-> CIE Lab conversion (torch and numpy) and the quantised ab grid of colorization.

Conversions follow the sRGB standard (IEC 61966-2-1: the piecewise gamma, the linear-RGB -> XYZ
matrix of the sRGB primaries) and CIE 1976 L*a*b* with the D65 reference white, taken as the XYZ
of sRGB white ``(1, 1, 1)`` through that matrix (``0.95047, 1.0000001, 1.08883``) so that every
sRGB grey maps to exactly ``a = b = 0``. White is ``L, a, b = 100, 0, 0``; pure red ``(1, 0, 0)``
is ``53.24, 80.09, 67.20``.

The ab grid (Zhang, Isola and Efros, "Colorful Image Colorization", ECCV 2016, section 2.1: a
grid of size 10 of which the Q = 313 in-gamut values are kept): the points of the grid of
spacing :data:`BIN_SIZE` = 10 (multiples of 10) whose Chebyshev (L-infinity) distance to the
convex hull of the ab of all ``256**3`` 8-bit sRGB colours is at most one grid step
(:func:`gamut_bins`). That rule gives exactly the paper's count,
:data:`EXPECTED_GAMUT_BINS` = 313 bins (a from -90 to 100, b from -110 to 100), and the same
count for any threshold from 9.99 to 10.01 (5 gives 269, 0 gives 233); the paper does not print
its rule. 261 of the bins hold some 8-bit colour (:func:`occupied_bins`); the 52 others are a
one-bin ring around the gamut, so that the annealed mean (a weighted mean of bin centres) can
reach the gamut's edge (sRGB's b reaches 94.5, beyond the last occupied centre at 90). The grid
is computed here, not read from another project's file; the tests assert the count.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

#: Side of an ab bin, in Lab units (the paper's grid size).
BIN_SIZE = 10.0
#: Number of bins :func:`gamut_bins` finds: the paper's Q = 313 (see the module docstring).
EXPECTED_GAMUT_BINS = 313

#: Linear sRGB -> CIE XYZ (D65), IEC 61966-2-1.
RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                       [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]], dtype=np.float64)
XYZ_TO_RGB = np.linalg.inv(RGB_TO_XYZ)
#: D65 reference white: the XYZ of sRGB white (greys map to a = b = 0 exactly).
WHITE = RGB_TO_XYZ.sum(axis=1)

_DELTA = 6.0 / 29.0


# -- torch ------------------------------------------------------------------------------------
def _to_last(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.movedim(dim, -1)


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB values in [0, 1] -> linear-light RGB (the sRGB gamma undone)."""
    return torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(lin: torch.Tensor) -> torch.Tensor:
    """Linear-light RGB -> sRGB values (the sRGB gamma applied; not clipped)."""
    return torch.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin.clamp(min=0.0031308) ** (1.0 / 2.4) - 0.055)


def _f(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _DELTA ** 3, t.clamp(min=_DELTA ** 3) ** (1.0 / 3.0), t / (3 * _DELTA ** 2) + 4.0 / 29.0)


def _f_inv(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _DELTA, t ** 3, 3 * _DELTA ** 2 * (t - 4.0 / 29.0))


def rgb_to_lab(rgb: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """sRGB in [0, 1] -> CIE Lab (L in [0, 100], a and b roughly in [-128, 127]).

    Args:
        rgb: Tensor with the three channels along ``dim`` (``[..., 3, H, W]`` by default).
        dim: The channel dimension.

    Returns:
        A tensor of the same shape holding ``L, a, b`` along ``dim``.
    """
    x = _to_last(rgb, dim)
    m = torch.as_tensor(RGB_TO_XYZ / WHITE[:, None], dtype=x.dtype, device=x.device)
    xyz = srgb_to_linear(x) @ m.T  # already divided by the white point
    fx, fy, fz = _f(xyz).unbind(-1)
    lab = torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-1)
    return lab.movedim(-1, dim)


def rgb8_to_lab(rgb: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """:func:`rgb_to_lab` of 8-bit sRGB (``uint8``, e.g. a batch ``[B, H, W, 3]`` on the training
    device): the same float32 values, with the sRGB gamma read from a 256-entry table."""
    table = srgb_to_linear(torch.arange(256, dtype=torch.float32, device=rgb.device) / 255.0)
    x = _to_last(table[rgb.long()], dim)
    m = torch.as_tensor(RGB_TO_XYZ / WHITE[:, None], dtype=x.dtype, device=x.device)
    fx, fy, fz = _f(x @ m.T).unbind(-1)
    lab = torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-1)
    return lab.movedim(-1, dim)


def lightness_to_srgb(lightness: torch.Tensor) -> torch.Tensor:
    """The sRGB grey value ``[0, 1]`` of lightness L (the colour ``L, 0, 0``; what :func:`lab_to_rgb`
    gives in each channel, up to float rounding, computed on one channel only)."""
    lin = _f_inv((lightness + 16.0) / 116.0).clamp(0.0, 1.0)  # a = b = 0: X = Y = Z relative to white
    return linear_to_srgb(lin)


def lab_to_linear(lab: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """CIE Lab -> linear-light RGB (not clipped: values outside [0, 1] are out of the sRGB gamut)."""
    x = _to_last(lab, dim)
    L, a, b = x.unbind(-1)
    fy = (L + 16.0) / 116.0
    xyz = torch.stack([_f_inv(fy + a / 500.0), _f_inv(fy), _f_inv(fy - b / 200.0)], dim=-1)
    m = torch.as_tensor(XYZ_TO_RGB * WHITE[None, :], dtype=x.dtype, device=x.device)
    return (xyz @ m.T).movedim(-1, dim)


def lab_to_rgb(lab: torch.Tensor, dim: int = -3, clip: bool = True) -> torch.Tensor:
    """CIE Lab -> sRGB in [0, 1] (clipped to the gamut unless ``clip`` is False)."""
    lin = lab_to_linear(lab, dim)
    if clip:
        lin = lin.clamp(0.0, 1.0)
    return linear_to_srgb(lin)


# -- numpy (channels last) --------------------------------------------------------------------
def rgb_to_lab_np(rgb: np.ndarray) -> np.ndarray:
    """sRGB ``[..., 3]`` (uint8 0..255 or float 0..1) -> Lab ``[..., 3]`` float32."""
    arr = np.asarray(rgb)
    x = torch.from_numpy(arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32))
    return rgb_to_lab(x, dim=-1).numpy()


def lab_to_rgb_np(lab: np.ndarray, clip: bool = True) -> np.ndarray:
    """Lab ``[..., 3]`` -> sRGB ``[..., 3]`` float32 in [0, 1] (see :func:`lab_to_rgb`)."""
    return lab_to_rgb(torch.from_numpy(np.asarray(lab, dtype=np.float32)), dim=-1, clip=clip).numpy()


# -- the ab grid ------------------------------------------------------------------------------
def convex_hull(points: np.ndarray) -> np.ndarray:
    """Vertices ``[V, 2]`` of the convex hull of 2-D ``points``, counter-clockwise, without collinear ones.

    Andrew's monotone chain, after dropping the points strictly inside the polygon of the extreme
    points in 64 directions (they cannot be hull vertices), so that the sequential chain only walks
    the few points near the boundary.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    angle = np.arange(64) * (2.0 * np.pi / 64)
    extreme = np.unique(p[np.argmax(np.stack([np.cos(angle), np.sin(angle)], axis=1) @ p.T, axis=1)], axis=0)
    if len(extreme) >= 3:
        centre = extreme.mean(axis=0)
        extreme = extreme[np.argsort(np.arctan2(*(extreme - centre).T[::-1]))]  # counter-clockwise
        edge = np.roll(extreme, -1, axis=0) - extreme
        keep = []
        for chunk in np.array_split(p, max(1, len(p) // 32768)):  # bounded memory
            left = (edge[:, 0] * (chunk[:, 1:2] - extreme[:, 1]) - edge[:, 1] * (chunk[:, 0:1] - extreme[:, 0]))
            keep.append(chunk[~(left > 1e-9).all(axis=1)])  # on or outside that polygon
        p = np.concatenate(keep)
    p = p[np.lexsort((p[:, 1], p[:, 0]))]

    def chain(points) -> list:
        out: list = []
        for q in points:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (q[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (q[0] - out[-2][0])) <= 0:
                out.pop()
            out.append((float(q[0]), float(q[1])))
        return out

    lower, upper = chain(p), chain(p[::-1])
    return np.array(lower[:-1] + upper[:-1], dtype=np.float64)


def chebyshev_distance(points: np.ndarray, hull: np.ndarray) -> np.ndarray:
    """Chebyshev (L-infinity) distance ``[P]`` from each point to a convex polygon (0 inside).

    ``hull``: the polygon's vertices, counter-clockwise (:func:`convex_hull`). The square of half-side
    ``t`` around a point meets the polygon unless an axis separates them, and by the separating-axis
    theorem only the polygon's edge normals and the two coordinate axes need testing: the distance
    is the largest ``(n . p - max_v n . v) / |n|_1`` over those axes in both directions.
    """
    v = np.asarray(hull, dtype=np.float64)
    edge = np.roll(v, -1, axis=0) - v
    axes = np.concatenate([np.stack([edge[:, 1], -edge[:, 0]], axis=1), np.eye(2)])
    axes = np.concatenate([axes, -axes])
    support = (axes @ v.T).max(axis=1)
    gap = (np.asarray(points, dtype=np.float64) @ axes.T - support) / np.abs(axes).sum(axis=1)
    return np.maximum(gap.max(axis=1), 0.0)


def cube_surface_rgb8() -> np.ndarray:
    """The 8-bit sRGB colours with at least one channel at 0 or 255, each once (uint8 ``[390152, 3]``)."""
    full, inner = np.arange(256), np.arange(1, 255)
    parts = [np.stack(np.meshgrid([0, 255], full, full, indexing="ij"), axis=-1),  # r at an end
             np.stack(np.meshgrid(inner, [0, 255], full, indexing="ij"), axis=-1),  # g at an end, r inside
             np.stack(np.meshgrid(inner, inner, [0, 255], indexing="ij"), axis=-1)]  # b only
    return np.concatenate([x.reshape(-1, 3) for x in parts]).astype(np.uint8)


@lru_cache(maxsize=1)
def srgb_ab_hull() -> np.ndarray:
    """Vertices ``[V, 2]`` (counter-clockwise, float64) of the convex hull of the ``(a, b)`` of all
    ``256**3`` 8-bit sRGB colours (Lab D65, computed in float64).

    Only the surface of the RGB cube is converted (:func:`cube_surface_rgb8`, 390 152 colours, a
    fraction of a second): the hull of the whole cube was checked to be the same 514 vertices,
    coordinate for coordinate. a spans -86.18 (green) to 98.23 (magenta), b -107.86 (blue) to 94.48
    (yellow).
    """
    rgb = torch.from_numpy(cube_surface_rgb8().astype(np.float64) / 255.0)
    hull = convex_hull(rgb_to_lab(rgb, dim=-1)[:, 1:].numpy())
    hull.flags.writeable = False
    return hull


def gamut_bins(threshold: float = BIN_SIZE) -> np.ndarray:
    """Centres ``[Q, 2]`` (a, b) of the ab bins, sorted by a then b (a new float32 array).

    The grid points of spacing :data:`BIN_SIZE` whose Chebyshev distance to :func:`srgb_ab_hull`
    (the convex hull of the sRGB gamut's ab; 0 inside) is at most ``threshold``. The default
    (one bin size) gives the paper's Q = 313 (:data:`EXPECTED_GAMUT_BINS`), and so does any
    threshold from 9.99 to 10.01; 5 gives 269, 0 (centres inside the hull) 233.
    """
    return _grid_near_gamut(float(threshold)).copy()


@lru_cache(maxsize=4)
def _grid_near_gamut(threshold: float) -> np.ndarray:
    g = np.arange(-15, 16, dtype=np.float64) * BIN_SIZE  # well beyond the gamut's +-110
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
    return grid[chebyshev_distance(grid, srgb_ab_hull()) <= threshold].astype(np.float32)


@lru_cache(maxsize=1)
def occupied_bins() -> np.ndarray:
    """Centres ``[Q, 2]`` of the bins that some 8-bit sRGB colour falls in (261; sorted by a then b).

    Bin ``(ca, cb)`` is the square ``[ca - 5, ca + 5) x [cb - 5, cb + 5)``; every one of the
    ``256**3`` colours is converted (float64, in chunks; about a second). This was the grid before
    :func:`gamut_bins`; its bins are all in that grid, which adds a one-bin ring around them.
    """
    levels = np.arange(256, dtype=np.float64) / 255.0
    lin = torch.from_numpy(np.where(levels <= 0.04045, levels / 12.92, ((levels + 0.055) / 1.055) ** 2.4))
    m = torch.from_numpy(RGB_TO_XYZ / WHITE[:, None])
    hit = torch.zeros(64, 64, dtype=torch.bool)  # bin index = centre / 10 + 32
    g, b = torch.meshgrid(lin, lin, indexing="ij")
    gb = torch.stack([g.reshape(-1), b.reshape(-1)], dim=-1)  # [65536, 2]
    for r in range(256):
        rgb = torch.cat([torch.full((gb.shape[0], 1), float(lin[r]), dtype=torch.float64), gb], dim=1)
        fx, fy, fz = _f(rgb @ m.T).unbind(-1)
        a, bb = 500.0 * (fx - fy), 200.0 * (fy - fz)
        ia = torch.floor(a / BIN_SIZE + 0.5).long() + 32
        ib = torch.floor(bb / BIN_SIZE + 0.5).long() + 32
        hit[ia, ib] = True
    ia, ib = torch.nonzero(hit, as_tuple=True)
    return np.stack([(ia - 32).numpy(), (ib - 32).numpy()], axis=1).astype(np.float32) * BIN_SIZE


def nearest_bins(ab: torch.Tensor, centres: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest bin centres of each ab point.

    Args:
        ab: ``[P, 2]`` ab values.
        centres: ``[Q, 2]`` bin centres.
        k: How many neighbours.

    Returns:
        ``(squared_distances [P, k], indices [P, k])``, nearest first.
    """
    d2 = torch.cdist(ab.float(), centres.float()).pow(2)
    d2, idx = torch.topk(d2, k, dim=1, largest=False, sorted=True)
    return d2, idx


def soft_encode(ab: torch.Tensor, centres: torch.Tensor, k: int = 5,
                sigma: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-encode ab points on the grid: Gaussian weights (``sigma``) on the ``k`` nearest bins.

    Returns:
        ``(weights [P, k], indices [P, k])``: the weights sum to 1 for every point, the first
        column is the nearest bin.
    """
    d2, idx = nearest_bins(ab, centres, k)
    w = torch.softmax(-d2 / (2.0 * sigma ** 2), dim=1)  # = exp(-d2 / 2s^2), normalised
    return w, idx


def annealed_mean(logits: torch.Tensor, centres: torch.Tensor, temperature: float = 0.38,
                  dim: int = 1) -> torch.Tensor:
    """Annealed-mean decoding: ``sum_q softmax(z / T)_q * centre_q`` (the paper's T = 0.38).

    ``softmax(z / T)`` equals the paper's ``exp(log p / T) / sum exp(log p / T)`` with ``p = softmax(z)``.

    Args:
        logits: Scores with the Q bins along ``dim`` (``[N, Q, H, W]`` by default).
        centres: ``[Q, 2]`` bin centres.
        temperature: The annealing temperature (1: the mean; towards 0: the mode).
        dim: The bin dimension.

    Returns:
        ab values with 2 channels along ``dim``.
    """
    p = torch.softmax(logits.float().movedim(dim, -1) / temperature, dim=-1)
    return (p @ centres.to(p.device, p.dtype)).movedim(-1, dim)
