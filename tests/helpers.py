"""Comparison helpers shared by the parity tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def as_numpy(outputs) -> list[np.ndarray]:
    if not isinstance(outputs, list | tuple):
        outputs = [outputs]
    return [o.detach().cpu().numpy() if hasattr(o, "detach") else np.asarray(o) for o in outputs]


def assert_close_scaled(got: Sequence, ref: Sequence, rel: float = 1e-4, what: str = "") -> None:
    """max |got - ref| <= rel * max(1, max |ref|), output by output, shapes equal."""
    got, ref = as_numpy(got), as_numpy(ref)
    assert len(got) == len(ref), f"{what}: {len(got)} outputs, expected {len(ref)}"
    for i, (g, r) in enumerate(zip(got, ref, strict=True)):
        assert g.shape == r.shape, f"{what} output {i}: shape {g.shape}, expected {r.shape}"
        scale = max(1.0, float(np.abs(r).max()) if r.size else 1.0)
        err = float(np.abs(g.astype(np.float64) - r.astype(np.float64)).max()) if r.size else 0.0
        assert err <= rel * scale, f"{what} output {i}: max abs err {err:.3e} > {rel:g} x scale {scale:.3g}"
