"""Describe a folder of images and save the descriptors (``netvlad-ros describe``).

Output: an ``.npz`` with ``descriptors`` (N, D) float32 (unit rows), ``paths``
(N,) str relative to the folder, and ``model_fingerprint`` and ``model_name``
(0-d str arrays). Plain arrays only: ``np.load(..., allow_pickle=False)`` reads it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..model import DescriptorExtractor
from .image_folder import list_images, read_image


def describe_folder(
    folder: str | Path,
    out: str | Path,
    extractor: DescriptorExtractor,
    batch_size: int | None = None,
    progress: bool = True,
) -> dict:
    """Describe every image under ``folder`` into ``out``; returns a summary dict.

    Unreadable files are skipped and listed in the summary, not fatal: one bad
    file in a folder of thousands should not lose the rest.
    """
    folder = Path(folder)
    files = list_images(folder)
    descriptors, kept, skipped = [], [], []
    t0 = time.perf_counter()
    bar = tqdm(total=len(files), unit="img", desc="describe", disable=not progress)
    step = batch_size or extractor.batch_size
    for start in range(0, len(files), step):
        chunk = files[start : start + step]
        images = []
        for path in chunk:
            try:
                images.append(read_image(path))
                kept.append(path)
            except ValueError as exc:
                skipped.append(f"{path}: {exc}")
        if images:
            descriptors.append(extractor(images))
        bar.update(len(chunk))
    bar.close()
    if not kept:
        raise ValueError(f"none of the {len(files)} images in {folder} could be decoded")
    out = Path(out)
    if out.suffix != ".npz":
        out = out.with_suffix(out.suffix + ".npz") if out.suffix else out.with_suffix(".npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.npz")
    np.savez(
        tmp,
        descriptors=np.concatenate(descriptors),
        paths=np.array([str(p.relative_to(folder)) for p in kept]),
        model_fingerprint=np.array(extractor.fingerprint),
        model_name=np.array(extractor.card.name),
    )
    os.replace(tmp, out)
    seconds = time.perf_counter() - t0
    return {
        "output": str(out),
        "images": len(kept),
        "skipped": skipped,
        "dim": extractor.dim,
        "seconds": seconds,
        "images_per_second": len(kept) / seconds if seconds > 0 else float("inf"),
    }


def load_descriptors(path: str | Path) -> dict[str, np.ndarray]:
    """Read a file written by describe_folder (no pickle)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
