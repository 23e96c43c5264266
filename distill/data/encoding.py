"""Turn a static image batch into a spike-train input ``[T, B, ...]``."""

from __future__ import annotations

import torch

ENCODINGS = ("direct", "poisson")


def encode(
    x_bchw: torch.Tensor,
    timesteps: int,
    mode: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Encode ``x_bchw`` over ``timesteps`` steps.

    Args:
        x_bchw: ``[B, C, H, W]`` (any trailing layout is repeated as is); float in [0, 1]
            for ``poisson``.
        timesteps: T >= 1.
        mode: ``"direct"``: the analogue image at every step (the first layer encodes);
            ``"poisson"``: spike 1.0 at each step independently with probability x.
        generator: randomness for ``poisson`` (None uses torch's global generator and is
            therefore not reproducible); ignored by ``direct``.

    Returns:
        ``[T, B, C, H, W]``, contiguous, dtype of ``x_bchw``.
    """
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise ValueError(f"timesteps must be an int >= 1, got {timesteps!r}")
    if mode not in ENCODINGS:
        raise ValueError(f"mode must be one of {ENCODINGS}, got {mode!r}")
    if not isinstance(x_bchw, torch.Tensor) or x_bchw.dim() < 1:
        raise ValueError("x_bchw must be a tensor [B, ...]")
    if mode == "direct":
        return x_bchw.unsqueeze(0).expand(timesteps, *x_bchw.shape).contiguous()
    if not x_bchw.dtype.is_floating_point:
        raise ValueError(f"poisson encoding needs a float tensor in [0, 1], got {x_bchw.dtype}")
    if x_bchw.numel() > 0:
        lo, hi = x_bchw.min().item(), x_bchw.max().item()
        if not (0.0 <= lo and hi <= 1.0):
            raise ValueError(f"poisson encoding needs x in [0, 1], got [{lo}, {hi}]")
    dev = generator.device if generator is not None else x_bchw.device
    u = torch.rand((timesteps, *x_bchw.shape), generator=generator, device=dev)
    # u in [0, 1): x = 0 never fires, x = 1 always does.
    return (u.to(x_bchw.device) < x_bchw.unsqueeze(0)).to(x_bchw.dtype)
