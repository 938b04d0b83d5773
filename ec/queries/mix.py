"""Image queries chosen for identifiability: dataset images plus generated ones.

A relu neuron is pinned down by the queries on both sides of its kink. On the 4000 offline
digits some teacher neurons are active on 99.9 % or 3 % of them (docs/results.md), so no
student can find them. The teacher may be asked about any image, so ``ec mnist --queries``
mixes sources, written ``SOURCE[:COUNT],...``:

``mnist``, ``fashion``, ``cifar10``, ``digits``
    training images of that dataset (``COUNT`` of them, seeded; all when omitted);
``lines``
    ``COUNT`` generated images ``x_i + t (x_i - x_j) + noise`` on the line through two
    images of the other sources, ``t ~ U(-1/2, 1)`` (between them and beyond), plus Gaussian
    pixel noise of standard deviation :data:`LINE_NOISE` (normalised units) so that every
    pixel varies, blank ones included;
``auto``
    the default: the teacher's dataset (up to ``--n-train`` images) and ``lines`` up to
    :data:`AUTO_TOTAL` queries. Not Fashion-MNIST, even where it is installed: for the default
    MNIST teacher, 16 000 lines leave at least 624 queries on the smaller side of every
    teacher neuron's hyperplane, 16 000 Fashion images only 65 (docs/results.md); and the
    default then asks the same queries on every machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .datasets import DATASET_NAMES, ImageDataset, load_dataset

Array = np.ndarray

GENERATED = ("lines",)
LINE_NOISE = 0.2
AUTO_TOTAL = 20000
_ITEM = re.compile(r"^([a-z0-9_]+)(?::(\d+))?$")


@dataclass(frozen=True)
class QueryMix:
    """The queries of one run: the images and where each block came from.

    Attributes
    ----------
    X : ndarray of float64, shape (n, d)
    parts : tuple of (str, int, str)
        ``(source, count, description)`` per block, in the order of ``X``'s rows.
    """

    X: Array
    parts: tuple[tuple[str, int, str], ...]

    @property
    def spec(self) -> str:
        """The resolved ``--queries`` value (explicit counts) that reproduces these queries."""
        return ",".join(f"{name}:{n}" for name, n, _ in self.parts)

    def describe(self) -> str:
        return ", ".join(f"{n} {what}" for _, n, what in self.parts)


def parse_queries(text: str) -> list[tuple[str, int | None]]:
    """``"mnist:4000,lines:16000"`` -> ``[("mnist", 4000), ("lines", 16000)]``.

    Raises
    ------
    ValueError
        An item that is not ``SOURCE[:COUNT]`` with a known source, a repeated source,
        ``lines`` without a count or without an image source, or ``auto`` mixed with others.
    """
    allowed = ", ".join((*DATASET_NAMES, *GENERATED, "auto"))
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    if not items:
        raise ValueError(f"the query list is empty; allowed: SOURCE[:COUNT],... with SOURCE in {allowed}")
    out = []
    for item in items:
        m = _ITEM.match(item)
        if not m or m.group(1) not in (*DATASET_NAMES, *GENERATED, "auto"):
            raise ValueError(f"item {item!r}: expected SOURCE[:COUNT] with SOURCE in {allowed}")
        count = None if m.group(2) is None else int(m.group(2))
        if count == 0:
            raise ValueError(f"item {item!r}: COUNT must be >= 1")
        out.append((m.group(1), count))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError("a source is named twice")
    if "auto" in names and len(names) > 1:
        raise ValueError("'auto' stands alone")
    if "lines" in names and dict(out)["lines"] is None:
        raise ValueError("'lines' needs a count (lines:COUNT)")
    if names == ["lines"]:
        raise ValueError("'lines' are drawn through images of another source; add one")
    return out


def resolve_auto(dataset: str, n_train: int) -> list[tuple[str, int | None]]:
    """What ``auto`` means for a teacher of ``dataset``: its images, then lines up to
    :data:`AUTO_TOTAL` queries (the count is filled in once the images are counted)."""
    return [(dataset, n_train or None), ("lines", None)]


def query_mix(items, teacher_data: ImageDataset, seed: int, data_dir=None, download: bool = False,
              query_dataset: str = "") -> QueryMix:
    """The query images for ``items`` (from :func:`parse_queries` or :func:`resolve_auto`).

    ``teacher_data`` serves its own name without loading it again (subset of its training
    split, seeded); other datasets are loaded, and must have the teacher's input size.
    """
    blocks, parts = [], []
    rng = np.random.default_rng([seed, 7])
    fill = None
    for name, count in items:
        if name == "lines":
            fill = count
            continue
        if name == teacher_data.name:
            data = teacher_data.subset(count or None, seed=seed)
        else:
            data = load_dataset(name, data_dir, download, n_train=count or None, seed=seed)
        if data.d_in != teacher_data.d_in:
            raise ValueError(f"--queries source {name!r} has {data.d_in} inputs per image, "
                             f"the {teacher_data.name!r} teacher takes {teacher_data.d_in}")
        blocks.append(data.X_train)
        parts.append((name, len(data.X_train), f"{name} images ({data.source})"))
    if any(n == "lines" for n, _ in items):
        images = np.concatenate(blocks)
        n_lines = fill if fill is not None else max(0, AUTO_TOTAL - len(images))
        if n_lines:
            blocks.append(line_images(images, n_lines, rng))
            parts.append(("lines", n_lines, f"images on lines through two of them (noise {LINE_NOISE})"))
    return QueryMix(np.concatenate(blocks), tuple(parts))


def line_images(images: Array, n: int, rng: np.random.Generator, noise: float = LINE_NOISE) -> Array:
    """``n`` images ``x_i + t (x_i - x_j) + noise * N(0, 1)`` with ``i, j`` uniform over
    ``images`` and ``t ~ U(-1/2, 1)``."""
    i = rng.integers(0, len(images), n)
    j = rng.integers(0, len(images), n)
    t = rng.uniform(-0.5, 1.0, (n, 1))
    return images[i] + t * (images[i] - images[j]) + noise * rng.standard_normal((n, images.shape[1]))
