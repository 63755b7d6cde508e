"""Why the CPU defaults cut work into pieces: ConvNet-128's 2x2 pooling and DC's real gradient, whole vs in pieces.

Two measurements, each side by side in one run (the variants alternate, ``--repeats`` rounds, the
median per variant; 2 threads):

* ``pool``: the forward of ConvNet's 2x2 average pooling on B maps of 128 x 32 x 32 (the first
  block's output), for B in ``--batches``: ``F.avg_pool2d``; the four strided slices summed into new
  tensors (the pooling of 92a8bfd); fairdistill's :class:`~fairdistill.models.convnet.AvgPool2x2`
  now (summed in place, 16 images per piece). All three give the same values bit for bit (checked).
* ``gradient``: the gradient of a per-sample weighted CE of ConvNet-128 (instance norm, 32 px, 3
  channels) on B real images, w.r.t. the weights: one forward and backward on the whole batch
  (``real_grad_chunk=0``) against pieces of 32 whose gradients are summed (the CPU default,
  ``models.GRADIENT_CHUNK``), through :func:`fairdistill.backbones.dc.weighted_gradient` itself. The
  relative difference of the two gradients (whole-gradient norm) is printed: rounding only.

Ratios are "pieces / whole" (below 1: the pieces are faster). Writes ``results/pieces.json``.

    python benchmarks/pieces.py [--batches 32,96,256,600] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import finish  # noqa: E402

from fairdistill.backbones.dc import weighted_gradient  # noqa: E402
from fairdistill.models import GRADIENT_CHUNK  # noqa: E402
from fairdistill.models.convnet import AvgPool2x2, ConvNet  # noqa: E402


def slices_into_new_tensors(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 0::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) * 0.25


def side_by_side(variants: dict[str, Callable[[], object]], repeats: int, calls: int) -> dict[str, float]:
    """Median seconds per call of each variant; the variants alternate within every round."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # warm-up: allocations, kernel choice
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="32,96,256,600")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    gen = torch.Generator().manual_seed(0)
    pool = AvgPool2x2()
    chunk = GRADIENT_CHUNK["cpu"]

    rows: dict[str, dict] = {"pool": {}, "gradient": {}}
    print(f"{'what':<9} {'B':>4} {'avg_pool2d ms':>14} {'new slices ms':>14} {'fairdistill ms':>15} {'ours/ref':>9}")
    for b in batches:
        x = torch.randn(b, 128, 32, 32, generator=gen)
        ref = F.avg_pool2d(x, 2)
        if not (torch.equal(pool(x), ref) and torch.equal(slices_into_new_tensors(x), ref)):
            raise SystemExit("the pooling variants disagree: not a like-for-like comparison")
        variants = {"avg_pool2d": partial(F.avg_pool2d, x, 2), "slices": partial(slices_into_new_tensors, x)}
        t = side_by_side({**variants, "ours": partial(pool, x)}, args.repeats, 10)
        ratio = t["ours"] / t["avg_pool2d"]
        rows["pool"][b] = {**t, "ratio_ours_to_avg_pool2d": ratio, "ratio_ours_to_slices": t["ours"] / t["slices"]}
        ms = {k: 1e3 * v for k, v in t.items()}
        print(f"{'pool':<9} {b:>4} {ms['avg_pool2d']:>14.2f} {ms['slices']:>14.2f} {ms['ours']:>15.2f} {ratio:>9.3f}")
    del x, ref

    torch.manual_seed(0)
    net = ConvNet(3, 10, 32)
    params = list(net.parameters())
    print(f"\n{'what':<9} {'B':>4} {'whole s':>9} {f'pieces of {chunk} s':>16} {'pieces/whole':>13} {'rel. diff':>10}")
    for b in batches:
        x = torch.randn(b, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (b,), generator=gen)
        w = torch.rand(b, generator=gen) / b
        whole, pieces = (
            partial(weighted_gradient, net, params, x, y, w),
            partial(weighted_gradient, net, params, x, y, w, chunk),
        )
        flat = torch.cat([g.reshape(-1) for g in whole()])
        diff = float((torch.cat([g.reshape(-1) for g in pieces()]) - flat).norm() / flat.norm())
        t = side_by_side({"whole": whole, "pieces": pieces}, args.repeats, 2)
        ratio = t["pieces"] / t["whole"]
        rows["gradient"][b] = {**t, "ratio_pieces_to_whole": ratio, "relative_difference": diff}
        print(f"{'gradient':<9} {b:>4} {t['whole']:>9.3f} {t['pieces']:>16.3f} {ratio:>13.3f} {diff:>10.1e}")

    headline = {f"ratio_pool_{b}": round(r["ratio_ours_to_avg_pool2d"], 3) for b, r in rows["pool"].items()}
    headline |= {f"ratio_gradient_{b}": round(r["ratio_pieces_to_whole"], 3) for b, r in rows["gradient"].items()}
    finish("pieces", headline, {"settings": vars(args), "gradient_chunk": chunk, "rows": rows})


if __name__ == "__main__":
    main()
