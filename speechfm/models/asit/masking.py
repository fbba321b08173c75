"""Group masked model learning (GMML, Atito et al.): the corruption of ASiT's student input.

The normalised (N, T, F) input is cut into *cells* the size of the patch stride (10 frames
x 10 bins for AST's 16 x 16 patches with stride 10; the last row/column of cells may be
narrower). Per input a target fraction ``r ~ U(min_fraction, max_fraction)`` is drawn, and
random groups of cells are masked until exactly ``round(r * cells)`` are:

- ``"block"``: rectangles of 1 .. ``max_block_fraction`` x grid side cells per side (a
  random corner, clipped at the grid's edge) - groups of neighbouring patches, as GMML;
- ``"time"``: runs of whole time columns (every bin of 1 .. max cells of frames);
- ``"freq"``: runs of whole frequency rows (every frame of 1 .. max cells of bins).

Blocks may overlap; the last one is trimmed to its first new cells (in time-major order,
whole columns / rows for "time" / "freq") so that the count is exact. The masked
elements are then replaced by Gaussian noise with each input's own mean and standard
deviation (``"noise"``, GMML's default) or by zeros (``"zeros"``).

Which *patches* count as masked (the local distillation's positions) is decided by area:
a patch is masked when more than ``threshold`` of its 16 x 16 elements are (default 0.5:
"mostly"; 0: any). With stride-10 cells a patch's own cell is 39% of its area, so a
masked patch always has its cell and at least one neighbouring cell masked.

Every random draw comes from ``generator`` (the global RNG when None), so masks are
reproducible (validation) and follow a resumed run's restored RNG (training).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from speechfm.models.asit.config import MASK_FILLS, MASK_SHAPES

__all__ = ["cell_grid", "draw_cell_mask", "fill_masked", "gmml_mask", "patch_mask"]

_DRAWS = 32  # random blocks drawn per call of the generator


def cell_grid(frames: int, bins: int, cell: tuple[int, int]) -> tuple[int, int]:
    """(time, frequency) cells covering a (frames, bins) input (edge cells may be narrower)."""
    return math.ceil(frames / cell[0]), math.ceil(bins / cell[1])


def draw_cell_mask(
    n: int,
    grid: tuple[int, int],
    *,
    shape: str = "block",
    min_fraction: float = 0.5,
    max_fraction: float = 0.7,
    max_block_fraction: float = 0.3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bool (n, C_t, C_f) cell masks, ``round(r * C_t * C_f)`` cells each (see the module
    doc; for "time"/"freq" ``round(r * C_t)`` columns / ``round(r * C_f)`` rows)."""
    if shape not in MASK_SHAPES:
        raise ValueError(f"mask shape must be one of {MASK_SHAPES}, got {shape!r}")
    if not 0.0 <= min_fraction <= max_fraction <= 1.0:
        raise ValueError(f"need 0 <= min_fraction <= max_fraction <= 1, got "
                         f"{min_fraction}, {max_fraction}")
    ct, cf = grid
    # Draw on a reduced grid: one unit per column ("time") or row ("freq").
    units = {"block": (ct, cf), "time": (ct, 1), "freq": (1, cf)}[shape]
    ut, uf = units
    max_t = max(1, int(ut * max_block_fraction))
    max_f = max(1, int(uf * max_block_fraction))
    fractions = torch.rand(n, generator=generator, dtype=torch.float64)
    out = np.zeros((n, ut, uf), dtype=bool)
    for i in range(n):
        r = min_fraction + (max_fraction - min_fraction) * float(fractions[i])
        target = int(round(r * ut * uf))
        grid_i = out[i]
        count = 0
        while count < target:
            u = torch.rand(_DRAWS, 4, generator=generator, dtype=torch.float64).numpy()
            for t0, f0, h, w in u:
                t0, f0 = int(t0 * ut), int(f0 * uf)
                h, w = 1 + int(h * max_t), 1 + int(w * max_f)
                block = np.zeros((ut, uf), dtype=bool)
                block[t0:t0 + h, f0:f0 + w] = True
                new = np.flatnonzero(block & ~grid_i)  # time-major order
                take = new[: target - count]
                grid_i.reshape(-1)[take] = True
                count += take.size
                if count >= target:
                    break
    mask = torch.from_numpy(out)
    if shape != "block":  # one unit per column / row: spread it over the other axis
        mask = mask.expand(n, ct, cf)
    return mask.contiguous()


def gmml_mask(
    n: int,
    frames: int,
    bins: int,
    *,
    cell: tuple[int, int] = (10, 10),
    shape: str = "block",
    min_fraction: float = 0.5,
    max_fraction: float = 0.7,
    max_block_fraction: float = 0.3,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Bool (n, frames, bins) element masks made of whole cells (:func:`draw_cell_mask`)."""
    grid = cell_grid(frames, bins, cell)
    cells = draw_cell_mask(n, grid, shape=shape, min_fraction=min_fraction,
                           max_fraction=max_fraction, max_block_fraction=max_block_fraction,
                           generator=generator)
    mask = cells.repeat_interleave(cell[0], dim=1).repeat_interleave(cell[1], dim=2)
    return mask[:, :frames, :bins].to(device)


def patch_mask(mask: torch.Tensor, patch: tuple[int, int], stride: tuple[int, int], *,
               threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Which patches count as masked.

    Args:
        mask: bool (N, T, F) element mask.
        patch, stride: the backbone's (time, frequency) patch size and stride.
        threshold: a patch is masked when more than this fraction of it is.

    Returns:
        (bool (N, P) patch mask, float (N, P) masked fraction of each patch), patches
        time-major as the backbone orders them.
    """
    frac = F.avg_pool2d(mask.float().unsqueeze(1), kernel_size=patch, stride=stride)
    frac = frac.flatten(1)
    return frac > threshold, frac


def fill_masked(x: torch.Tensor, mask: torch.Tensor, fill: str = "noise", *,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` (N, T, F) with the ``mask``ed elements replaced: ``"noise"`` = N(mean, std) of
    each input's own values, ``"zeros"`` = 0."""
    if fill not in MASK_FILLS:
        raise ValueError(f"mask fill must be one of {MASK_FILLS}, got {fill!r}")
    mask = mask.to(x.device)
    if fill == "zeros":
        return x.masked_fill(mask, 0.0)
    if generator is None:
        noise = torch.randn_like(x)
    else:
        noise = torch.randn(x.shape, generator=generator, device=generator.device,
                            dtype=x.dtype).to(x.device)
    with torch.no_grad():
        flat = x.detach().flatten(1)
        mean = flat.mean(1)[:, None, None]
        std = flat.std(1)[:, None, None] if flat.shape[1] > 1 else torch.ones_like(mean)
    return torch.where(mask, noise * std + mean, x)
