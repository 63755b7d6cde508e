"""A DM distillation that keeps what the distributed tests compare; run in-process or under torchrun.

    torchrun --nproc_per_node N tests/torchrun_job.py OUT PRESET BACKBONE [RESUME_CHECKPOINT]

writes (rank 0 only) ``OUT/result.safetensors``: the whole synthetic set, its SGD momentum and the
real statistics of the last iteration (sums, counts, population weights, unlabelled sums and counts),
plus ``OUT/meta.json``. A run that does not resume also writes the state after iteration
:data:`SAVE_AT` to ``OUT/checkpoint.safetensors``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

ITERATIONS = 6
SAVE_AT = 3  # the in-process run also saves the state after this iteration (what a resumed run starts from)
#: small loops, so that every backbone's test takes seconds
SETTINGS = {
    "dm": {},
    "dc": {"outer_loop": 2, "inner_loop": 1},
    "idc": {"outer_loop": 2, "inner_loop": 1, "factor": 2},
    "cafe": {"outer_loop": 2, "inner_loop": 2},
}


def run(out: Path, preset: str, backbone: str, resume: Path | None = None) -> None:
    from safetensors.torch import save_file

    from fairdistill import runtime
    from fairdistill.backbones import get_backbone
    from fairdistill.checkpoint import load_checkpoint, save_checkpoint
    from fairdistill.data import load_dataset
    from fairdistill.presets import resolve_preset

    torch.set_num_threads(1)
    with runtime.session("cpu") as rt:
        dev = rt.device("cpu")
        data = load_dataset("digits-fg")
        p = resolve_preset(preset, ipc=2, seed=3, device=dev, backbone=backbone)
        config = replace(p.distill, iterations=ITERATIONS, warm_epochs=1, batch_real=32, **SETTINGS[backbone])
        state = load_checkpoint(resume)[0] if resume is not None else None
        kept: dict[str, torch.Tensor] = {}

        def callback(st) -> None:
            snap = st.snapshot() if st.done in (SAVE_AT, ITERATIONS) else None  # collective: every rank
            if st.done == SAVE_AT and rt.is_main and resume is None:
                save_checkpoint(out / "checkpoint.safetensors", snap, {"test": preset})
            if st.done == ITERATIONS:
                (ms,) = snap.methods.values()
                kept["images"] = ms.images
                kept["momentum"] = next(iter(ms.optimizer["state"].values()))["momentum_buffer"]
                for stats in (st.stats or {}).values():  # DM reports the real statistics it matched
                    for name in ("sums", "counts", "population_weights", "unlabelled_sums", "unlabelled_counts"):
                        kept[f"stats.{name}"] = getattr(stats, name).cpu()

        sets = get_backbone(backbone).distill(data, [p.method], config, device=dev, callback=callback, resume=state)
        (synset,) = sets.values()
        if rt.is_main:
            out.mkdir(parents=True, exist_ok=True)
            kept["final"] = synset.images
            kept["labels"] = synset.labels
            save_file({k: v.contiguous() for k, v in kept.items()}, str(out / "result.safetensors"))
            meta = {k: synset.meta.get(k) for k in ("final_loss", "real_images_matched", "processes")}
            (out / "meta.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    run(Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4]) if len(sys.argv) > 4 else None)
