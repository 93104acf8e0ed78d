"""Safe image loading, the multi-label image-list dataset every source builds, and its collate function.

A missing image is a `DataError` naming the path. An image that exists but does not decode (truncated,
not an image) is a `CorruptImageError` naming the file and the `skip_corrupt` option. With
`skip_corrupt=True` the dataset returns a `SkippedImage` marker instead, which `collate` drops and
counts in the batch's "skipped" field, so one bad file in 100k does not stop a long run.

Every item carries the image's true scene id, -1 where the dataset has none (only the synthetic data
records one); the batch's "scene" holds them. Only `scene_source='oracle'` reads them (engine.py).

Images are uint8 [3,S,S] items and uint8 [B,3,S,S] batches (transforms.py); `transforms.to_model_input`
normalises a batch on the device. Inside a DataLoader worker, `collate` stacks straight into shared memory, so
a batch reaches the main process without another copy.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from salgl_core.data.errors import CorruptImageError, DataError

log = logging.getLogger(__name__)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image fully decoded as RGB; errors name the file."""
    try:
        with Image.open(path) as img:
            # convert() forces the decode here, so a truncated file fails now and not in a transform.
            return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist (it was listed by the dataset's annotations)") from None
    except (PermissionError, IsADirectoryError) as e:
        raise DataError(f"image file {path} cannot be read: {e}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # PIL reports truncation and unknown formats as OSError (UnidentifiedImageError is one).
        raise CorruptImageError(
            f"image file {path} is corrupt or truncated and cannot be decoded ({type(e).__name__}: {e}). "
            "Replace the file, or set skip_corrupt=True (--skip-corrupt) to skip such images and count them."
        ) from None


def check_files_exist(paths: Sequence[str], listed_by: str, hint: str, what: str = "image files") -> None:
    """Raise one DataError if any of `paths` is not a file; cheap: one directory listing per folder."""
    by_dir: dict[str, list[str]] = defaultdict(list)
    for p in paths:
        d, name = os.path.split(p)
        by_dir[d].append(name)
    missing: list[str] = []
    for d, names in by_dir.items():
        try:
            present = set(os.listdir(d or "."))
        except (FileNotFoundError, NotADirectoryError):
            present = set()
        missing.extend(os.path.join(d, n) for n in names if n not in present)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{len(missing)} of {len(paths)} {what} listed by {listed_by} are missing, "
                        f"e.g. {missing[0]}{more}; {hint}")


@dataclass(frozen=True)
class SkippedImage:
    """Returned instead of an item when an image is corrupt and skip_corrupt is set."""

    index: int
    path: str
    image_shape: tuple[int, ...]
    num_classes: int
    image_dtype: torch.dtype = torch.uint8  # what the dataset's items hold (a feature cache: float32)


NO_SCENE = -1  # the scene id of an item whose dataset records none


class MultiLabelDataset(Dataset):
    """Images with multi-hot targets. Item: (image [3,S,S], target float32 [C], ignore bool [C], index,
    scene), scene being the true scene id (int) or NO_SCENE. The image is what `transform` returns: uint8 with
    the transforms of transforms.py (normalised on the device by transforms.to_model_input).

    `ignore[i, c]` marks pairs left out of AP (VOC's difficult-only objects); all False elsewhere.
    Paths live in one numpy string array rather than a list of str so that forked DataLoader
    workers do not slowly copy the whole list by touching Python refcounts.
    """

    def __init__(self, paths: Sequence[str], labels: np.ndarray, class_names: Sequence[str],
                 transform: Callable[[Image.Image], torch.Tensor], image_size: int,
                 ignore: np.ndarray | None = None, skip_corrupt: bool = False,
                 scene_ids: np.ndarray | None = None, ids: Sequence[Any] | None = None) -> None:
        n, c = labels.shape
        if len(paths) != n or len(class_names) != c:
            raise ValueError(f"{len(paths)} paths, labels {labels.shape}, {len(class_names)} classes do not match")
        self.paths = np.array([str(p) for p in paths]) if n else np.array([], dtype=str)
        self.labels = np.ascontiguousarray(labels, dtype=np.float32)
        self.ignore = (np.zeros((n, c), dtype=bool) if ignore is None
                       else np.ascontiguousarray(ignore, dtype=bool))
        self.class_names = list(class_names)
        self.transform = transform
        self.image_size = image_size
        self.skip_corrupt = skip_corrupt
        self.scene_ids = None if scene_ids is None else np.asarray(scene_ids, dtype=np.int64)
        # Source-specific image ids (COCO image id, VOC id, NUS-WIDE relative path), for tracing back.
        self.ids = None if ids is None else list(ids)

    @property
    def num_classes(self) -> int:
        return self.labels.shape[1]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int] | SkippedImage:
        path = str(self.paths[index])
        try:
            img = load_image(path)
        except CorruptImageError:
            if not self.skip_corrupt:
                raise
            log.warning("skipping corrupt image %s (skip_corrupt is set)", path)
            s = self.image_size
            return SkippedImage(index, path, (3, s, s), self.num_classes)
        scene = NO_SCENE if self.scene_ids is None else int(self.scene_ids[index])
        return (self.transform(img), torch.from_numpy(self.labels[index]),
                torch.from_numpy(self.ignore[index]), index, scene)


def _stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """torch.stack, straight into shared memory inside a DataLoader worker: the batch then crosses to the main
    process as it is, where a private tensor would be copied into /dev/shm once more (torch's default_collate
    does the same)."""
    out = None
    if torch.utils.data.get_worker_info() is not None:
        first = tensors[0]
        storage = first.untyped_storage()._new_shared(len(tensors) * first.nbytes, device=first.device)
        out = first.new_empty(0).set_(storage).view(len(tensors), *first.shape)
    return torch.stack(tensors, out=out)


def collate(batch: Sequence[tuple | SkippedImage]) -> dict[str, Any]:
    """Stack items into {"images", "targets", "ignore", "index", "scene", "skipped"}, dropping skipped images.

    Images stay as the dataset gives them: uint8 [B, 3, S, S] from the image transforms (normalised on the
    device by transforms.to_model_input), float32 features from a feature cache. Inside a worker the stacked
    tensors are allocated in shared memory. A batch whose images were all skipped has B = 0 (shapes
    [0, 3, S, S] etc., images in the marker's dtype), never a crash.
    """
    items = [b for b in batch if not isinstance(b, SkippedImage)]
    skipped = len(batch) - len(items)
    if not items:
        first = batch[0]
        assert isinstance(first, SkippedImage)
        return {"images": torch.zeros((0, *first.image_shape), dtype=first.image_dtype),
                "targets": torch.zeros((0, first.num_classes)),
                "ignore": torch.zeros((0, first.num_classes), dtype=torch.bool),
                "index": torch.zeros(0, dtype=torch.long), "scene": torch.zeros(0, dtype=torch.long),
                "skipped": skipped}
    images, targets, ignore, index, scene = zip(*items, strict=True)
    return {"images": _stack(images), "targets": _stack(targets), "ignore": _stack(ignore),
            "index": torch.tensor(index, dtype=torch.long), "scene": torch.tensor(scene, dtype=torch.long),
            "skipped": skipped}


def require_dir(path: str | Path, what: str, hint: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        state = "is not a folder" if p.exists() else "does not exist"
        raise DataError(f"{p} {state}: expected {what} there; {hint}")
    return p


def require_file(path: str | Path, what: str, hint: str) -> Path:
    p = Path(path)
    if not p.is_file():
        state = "is not a file" if p.exists() else "does not exist"
        raise DataError(f"{p} {state}: expected {what} there; {hint}")
    return p
