"""Random crop and horizontal flip of a whole batch, in one gather.

All randomness comes from the caller's generator, drawn in a fixed order (crop row offsets
``[B]``, crop column offsets ``[B]``, flip draws ``[B]``), so a generator in the same state
gives the same batch bit for bit: this is what lets a resumed run repeat an interrupted one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import AugmentSpec


def augment_batch(
    x_bchw: torch.Tensor, spec: AugmentSpec, generator: torch.Generator
) -> torch.Tensor:
    """Augment a batch as ``spec`` says.

    Args:
        x_bchw: images ``[B, C, H, W]`` (any dtype).
        spec: crop padding ``p`` and whether to flip.
        generator: source of all randomness (its device is where draws are made).

    Returns:
        ``[B, C, H, W]``, same dtype and device. For each sample, the ``H x W`` window at a
        uniformly random offset ``(dy, dx)`` in ``[0, 2p]^2`` of the image zero-padded by
        ``p``, then mirrored left-right with probability 0.5 if ``spec.hflip``. The input
        itself is returned when the spec does nothing.
    """
    if not isinstance(x_bchw, torch.Tensor) or x_bchw.dim() != 4:
        raise ValueError(
            f"x_bchw must be a tensor [B, C, H, W], got {getattr(x_bchw, 'shape', type(x_bchw))}"
        )
    if not isinstance(spec, AugmentSpec):
        raise ValueError(f"spec must be an AugmentSpec, got {spec!r}")
    if spec.is_identity:
        return x_bchw
    b, c, h, w = x_bchw.shape
    p = spec.crop_padding
    gen_dev = generator.device
    dy = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=gen_dev)
    dx = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=gen_dev)
    if spec.hflip:
        flip = torch.rand((b,), generator=generator, device=gen_dev) < 0.5
    else:
        flip = torch.zeros((b,), dtype=torch.bool, device=gen_dev)
    dev = x_bchw.device
    dy, dx, flip = dy.to(dev), dx.to(dev), flip.to(dev)

    xp = F.pad(x_bchw, (p, p, p, p)) if p > 0 else x_bchw
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = dy[:, None] + ar_h[None, :]  # [B, H]
    # A flip is a crop read right to left: column j takes source column dx + (W-1-j).
    cols = dx[:, None] + torch.where(flip[:, None], (w - 1) - ar_w[None, :], ar_w[None, :])
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
