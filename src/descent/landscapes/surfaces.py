"""The classic 2-D test surfaces, written with torch ops so autograd gives the gradient.

Every ``f(x, y)`` takes tensors of any (matching) shape, so a whole batch of points, a
tuning grid or a contour grid evaluates in one call.

Goal of a run (what tuning minimises, :meth:`Surface.gap`):

* surfaces with minima: the distance from the final point to the nearest known
  minimum, counted as 0 once it is within ``tol`` (1 % of the window's diagonal);
* the two saddles, which have no minimum: how far ``f`` at the final point still is
  above the ``escape`` level (0 once the run has gone below it, i.e. escaped
  downhill far enough from the saddle; escaping is final, and what the run does after
  it, including leaving the box downhill, does not count against it).

Noise (the stochastic variant, :meth:`Surface.noisy`): at step t the loss gets the term
``σ·(ξ_t · (x, y))`` with ξ_t ~ N(0, I₂), so the gradient autograd returns is
``∇f + σ·ξ_t``: unbiased, with standard deviation σ per coordinate. ξ_t comes from a
``torch.Generator`` seeded with ``seed`` and is the same for every point of a batch
(common random numbers: every candidate and every optimizer sees the same noise).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Point = tuple[float, float]


@dataclass(frozen=True)
class Surface:
    key: str
    title: str
    #: the formula, as plain text for legends and docs
    formula: str
    fn: Callable[[Tensor, Tensor], Tensor]
    #: known global minima (empty for the saddles)
    minima: tuple[Point, ...]
    #: plotting window: (xmin, xmax, ymin, ymax)
    window: tuple[float, float, float, float]
    start: Point
    #: default number of optimizer steps for a picture
    steps: int = 200
    #: saddle surfaces: the level f must reach to count as escaped
    escape: float | None = None
    #: stationary points that are not minima, marked on the pictures
    saddles: tuple[Point, ...] = ()
    #: a minimum counts as reached within this fraction of the window's diagonal
    tol_fraction: float = 0.01
    #: contour levels spaced on a log scale (for f ≥ 0 spanning many decades)
    log_levels: bool = True
    #: the box outside which a run has diverged, as a multiple of the window (about its
    #: centre); 1 for Rastrigin, whose window is its standard search domain
    box_scale: float = 4.0
    noise: float = 0.0
    seed: int = 0

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        return self.fn(x, y)

    def f(self, xy: Tensor) -> Tensor:
        """f at points ``xy`` of shape (..., 2)."""
        return self.fn(xy[..., 0], xy[..., 1])

    def loss(self, xy: Tensor, xi: Tensor | None = None) -> Tensor:
        """Sum of f over a batch of points (…, 2), plus the noise term ``σ ξ·xy``."""
        total = self.f(xy).sum()
        if self.noise and xi is not None:
            total = total + self.noise * (xy * xi).sum()
        return total

    def gap(self, xy: Tensor) -> Tensor:
        """How far each point (…, 2) is from this surface's goal; 0 once reached."""
        if self.escape is not None:
            return (self.f(xy) - self.escape).clamp(min=0)
        m = torch.tensor(self.minima, dtype=xy.dtype, device=xy.device)
        d = torch.linalg.vector_norm(xy[..., None, :] - m, dim=-1).amin(dim=-1)
        return torch.where(d <= self.tol, torch.zeros_like(d), d)

    @property
    def tol(self) -> float:
        """Distance to a minimum that counts as reached: 1 % of the window's diagonal."""
        x0, x1, y0, y1 = self.window
        return self.tol_fraction * math.hypot(x1 - x0, y1 - y0)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Points outside this box (the window grown ``box_scale``× about its centre) have
        diverged."""
        x0, x1, y0, y1 = self.window
        half = self.box_scale / 2
        cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, half * (x1 - x0), half * (y1 - y0)
        return cx - hx, cx + hx, cy - hy, cy + hy

    def inside_box(self, xy: Tensor) -> Tensor:
        x0, x1, y0, y1 = self.box
        x, y = xy[..., 0], xy[..., 1]
        return torch.isfinite(xy).all(dim=-1) & (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)

    def noisy(self, noise: float, seed: int = 0) -> Surface:
        """The stochastic variant: gradients with Gaussian noise of std ``noise``."""
        if not noise >= 0 or math.isinf(noise):
            raise ValueError(f"Invalid noise level: {noise} (expected a finite number ≥ 0)")
        return dataclasses.replace(self, noise=float(noise), seed=int(seed))

    def noise_stream(self) -> NoiseStream:
        return NoiseStream(self.noise, self.seed)


class NoiseStream:
    """ξ_1, ξ_2, … ~ N(0, I₂) from a seeded generator (``None`` when noise is off)."""

    def __init__(self, noise: float, seed: int):
        self.on = bool(noise)
        self.gen = torch.Generator().manual_seed(seed)

    def draw(self) -> Tensor | None:
        if not self.on:
            return None
        return torch.randn(2, generator=self.gen, dtype=torch.float64)


# -- the functions -------------------------------------------------------------------------
def beale(x: Tensor, y: Tensor) -> Tensor:
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def rosenbrock(x: Tensor, y: Tensor) -> Tensor:
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def himmelblau(x: Tensor, y: Tensor) -> Tensor:
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def rastrigin(x: Tensor, y: Tensor) -> Tensor:
    tau = 2 * math.pi
    return 20 + x**2 - 10 * torch.cos(tau * x) + y**2 - 10 * torch.cos(tau * y)


def booth(x: Tensor, y: Tensor) -> Tensor:
    return (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2


def saddle(x: Tensor, y: Tensor) -> Tensor:
    return x**2 - y**2


def monkey_saddle(x: Tensor, y: Tensor) -> Tensor:
    return x**3 - 3 * x * y**2


def _quadratic_fn(kappa: float, angle: float = 0.0) -> Callable[[Tensor, Tensor], Tensor]:
    if angle == 0.0:

        def f(x: Tensor, y: Tensor) -> Tensor:
            return x**2 / kappa + y**2

        return f
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))

    def rotated(x: Tensor, y: Tensor) -> Tensor:
        # the same bowl with its axes turned by ``angle``: u, v are the coordinates
        # along the flat and the steep eigenvector
        u, v = c * x + s * y, -s * x + c * y
        return u**2 / kappa + v**2

    return rotated


def quadratic(kappa: float = 20.0, angle: float = 0.0) -> Surface:
    """``x²/κ + y²``: Hessian diag(2/κ, 2), condition number κ (κ = 20 is the classic
    ``x²/20 + y²`` of the textbooks' momentum pictures).

    ``angle`` (degrees) turns the bowl: ``u²/κ + v²`` with ``u = x cos a + y sin a``,
    ``v = −x sin a + y cos a``, the same eigenvalues along turned axes. Gradient
    descent and momentum do not see the turn; per-coordinate methods do."""
    if not (kappa >= 1 and math.isfinite(kappa)):
        raise ValueError(f"Invalid condition number kappa: {kappa} (expected a finite number ≥ 1)")
    if not math.isfinite(angle):
        raise ValueError(f"Invalid angle: {angle} (expected a finite number of degrees)")
    k = f"{kappa:g}"
    title, formula = f"Ill-conditioned quadratic, κ = {k}", f"x²/{k} + y²"
    if angle:
        a = f"{angle:g}"
        title += f", turned {a}°"
        formula = f"u²/{k} + v², (u, v) = (x, y) turned by {a}°"
    return Surface(
        "quadratic",
        title,
        formula,
        _quadratic_fn(float(kappa), float(angle)),
        ((0.0, 0.0),),
        (-10.0, 10.0, -5.0, 5.0),
        (-7.0, 2.0),
        steps=150,
    )


# Himmelblau's minima, to float64 precision (Newton's method on the closed form).
_HIMMELBLAU_MINIMA = (
    (3.0, 2.0),
    (-2.805118086952745, 3.131312518250573),
    (-3.779310253377747, -3.283185991286169),
    (3.5844283403304917, -1.8481265269644034),
)

SURFACES: dict[str, Surface] = {
    s.key: s
    for s in (
        Surface(
            "beale",
            "Beale",
            "(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²",
            beale,
            ((3.0, 0.5),),
            (-1.0, 4.5, -1.5, 2.0),
            (0.7, 1.4),
            steps=300,
        ),
        Surface(
            "rosenbrock",
            "Rosenbrock",
            "(1 − x)² + 100 (y − x²)²",
            rosenbrock,
            ((1.0, 1.0),),
            (-2.0, 2.0, -1.0, 3.0),
            (-1.2, 1.0),
            steps=500,
        ),
        Surface(
            "himmelblau",
            "Himmelblau",
            "(x² + y − 11)² + (x + y² − 7)²",
            himmelblau,
            _HIMMELBLAU_MINIMA,
            (-5.0, 5.0, -5.0, 5.0),
            (-0.3, -0.9),
            steps=200,
            saddles=((-0.270845, -0.923039),),
        ),
        Surface(
            "rastrigin",
            "Rastrigin",
            "20 + x² − 10 cos 2πx + y² − 10 cos 2πy",
            rastrigin,
            ((0.0, 0.0),),
            (-5.12, 5.12, -5.12, 5.12),
            (2.4, 2.35),
            steps=200,
            log_levels=False,
            box_scale=1.0,
        ),
        Surface(
            "booth",
            "Booth",
            "(x + 2y − 7)² + (2x + y − 5)²",
            booth,
            ((1.0, 3.0),),
            (-8.0, 8.0, -6.0, 10.0),
            (-6.0, -4.0),
            steps=150,
        ),
        Surface(
            "saddle",
            "Saddle",
            "x² − y²",
            saddle,
            (),
            (-1.5, 1.5, -1.5, 1.5),
            (-1.0, 1e-3),
            steps=150,
            escape=-1.0,
            saddles=((0.0, 0.0),),
            log_levels=False,
        ),
        Surface(
            "monkey",
            "Monkey saddle",
            "x³ − 3xy²",
            monkey_saddle,
            (),
            (-1.5, 1.5, -1.5, 1.5),
            (1.0, 1e-3),
            steps=150,
            escape=-1.0,
            saddles=((0.0, 0.0),),
            log_levels=False,
        ),
        quadratic(),
    )
}


def get(key: str, *, kappa: float | None = None) -> Surface:
    """The surface named ``key``; ``kappa`` sets the quadratic's condition number."""
    name = key.strip().lower()
    if name not in SURFACES:
        raise ValueError(f"Unknown surface {key!r}; choose from: {', '.join(SURFACES)}")
    if kappa is not None:
        if name != "quadratic":
            raise ValueError(f"kappa={kappa} only applies to the 'quadratic' surface, not {key!r}")
        return quadratic(kappa)
    return SURFACES[name]
