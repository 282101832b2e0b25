"""Decoding the images once, in parallel: each resized and cropped as the authors' transforms do
(or as a model's input pipeline says), kept as uint8."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from layercrit.study.pipelines import STUDY_INTERPOLATION


class ImageDecodeError(ValueError):
    """An image file cannot be decoded (corrupt, truncated, not an image)."""


@functools.lru_cache(maxsize=4)
def _transform(resize: int, crop: int, interpolation: str = STUDY_INTERPOLATION) -> transforms.Compose:
    # The authors' transforms (Resize on PIL: bilinear, antialiased), minus ToTensor's /255,
    # which the model input transform applies later (uint8 / 255 is bitwise what ToTensor gives).
    # timm's evaluation transform is the same Resize and CenterCrop with its own size and filter.
    resize_step = transforms.Resize(resize, interpolation=transforms.InterpolationMode(interpolation))
    return transforms.Compose([resize_step, transforms.CenterCrop(crop), transforms.PILToTensor()])


def preprocess(path: str | Path, resize: int = 256, crop: int = 224, interpolation: str = STUDY_INTERPOLATION) -> torch.Tensor:
    """One image as uint8 3×crop×crop: RGB, shorter side resized to ``resize`` with
    ``interpolation`` (a name of ``layercrit.study.pipelines.INTERPOLATIONS``), center crop."""
    try:
        # ImageFolder's pil_loader: open, convert to RGB (grayscale, CMYK, palette → RGB).
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError… for broken files
        raise ImageDecodeError(
            f"Cannot decode image {path}: {type(e).__name__}: {e}. The file is corrupt, truncated or not an image."
        ) from e
    return _transform(resize, crop, interpolation)(rgb)


def _decode_chunk(paths: list[str], resize: int, crop: int, interpolation: str) -> np.ndarray:
    # numpy, not torch, across the process boundary: torch would pass tensors through shared
    # memory file descriptors, which a long run with many chunks does not need.
    return torch.stack([preprocess(p, resize, crop, interpolation) for p in paths]).numpy()


def _worker_init() -> None:
    # One decoding process per core; torch's own thread pool would only oversubscribe them.
    torch.set_num_threads(1)


def default_workers() -> int:
    """The cores this process may use (respects Slurm/cgroup CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def decode_images(
    paths: Sequence[str | Path],
    *,
    resize: int = 256,
    crop: int = 224,
    interpolation: str = STUDY_INTERPOLATION,
    workers: int | None = None,
    progress: bool = True,
    chunk_size: int = 32,
    desc: str = "decoding images",
) -> torch.Tensor:
    """Decode ``paths`` into one preallocated uint8 N×3×crop×crop tensor, in parallel processes.

    A process pool with chunks of up to ``chunk_size`` images and at most two chunks per worker
    in flight, so memory stays at the output tensor plus a few chunks. ``workers`` ≤ 1 decodes in
    this process. ``desc`` labels the progress bar.
    """
    n = len(paths)
    images = torch.empty((n, 3, crop, crop), dtype=torch.uint8)
    workers = default_workers() if workers is None else workers
    bar = _progress_bar(n, progress, desc)
    # Small sets are still spread over all workers (at least two chunks each).
    chunk_size = max(1, min(chunk_size, -(-n // (2 * max(workers, 1)))))
    try:
        if workers <= 1 or n <= 1:
            for i, p in enumerate(paths):
                images[i] = preprocess(p, resize, crop, interpolation)
                bar.update(1)
            return images
        starts = iter(range(0, n, chunk_size))
        with cf.ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
            pending: dict[cf.Future, int] = {}
            try:
                while True:
                    while len(pending) < 2 * workers and (start := next(starts, None)) is not None:
                        chunk = [str(p) for p in paths[start : start + chunk_size]]
                        pending[pool.submit(_decode_chunk, chunk, resize, crop, interpolation)] = start
                    if not pending:
                        break
                    done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    for future in done:
                        start = pending.pop(future)
                        block = torch.from_numpy(future.result())
                        images[start : start + len(block)] = block
                        bar.update(len(block))
            except BaseException:
                # Stop queued work at once (a corrupt file, Ctrl-C) instead of finishing it.
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        return images
    finally:
        bar.close()


def _progress_bar(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    # The rate (img/s) is what tells whether decoding is I/O- or CPU-bound.
    return tqdm(total=total, unit="img", desc=desc, file=sys.stderr, disable=not enabled, smoothing=0.1)
