"""Explicit, derived randomness.

Every random draw in fairdistill comes from a ``torch.Generator`` seeded by
:func:`derive_seed` from the run's seed and a tuple of keys naming the purpose ("dsa",
iteration 17, class 3, ...). Draws therefore never depend on the order in which other parts of
the program consumed randomness: a method distilled alone and the same method distilled in
lockstep with others see the same networks, batches and augmentations.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *keys: object) -> int:
    """Return a 63-bit seed determined by ``seed`` and ``keys`` (stable across runs and machines)."""
    text = repr((int(seed), *keys)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def generator(seed: int, *keys: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh generator on ``device`` seeded with ``derive_seed(seed, *keys)``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *keys))
    return g
