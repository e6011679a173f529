"""Datasets, the search split, deterministic batching and on-device augmentation.

* ``fashion_mnist`` — embedded: 10,000 train / 2,000 test real Fashion-MNIST images
  (balanced, 28x28x1, MIT licence, see ``datasets/FASHION_MNIST_LICENSE``) shipped in
  the package; regenerate with ``scripts/make_embedded_dataset.py``.
* ``cifar10``, ``cifar100``, ``svhn_cropped``, ``imagenet2012`` — TFDS, read without
  TensorFlow via ``tfds.data_source`` (random access, ``array_record`` format). They
  must be prepared once (needs TensorFlow and the internet)::

      pip install -e ".[tfds]"
      python -c "import tensorflow_datasets as tfds; \\
          tfds.builder('cifar10').download_and_prepare(file_format='array_record')"

  A dataset that is not prepared fails at once with that instruction; nothing is
  downloaded implicitly.

Batching is deterministic given ``(seed, epoch)``; the iterator position is
``(epoch, step)``, which the search checkpoint stores. Augmentation (random crop of the
zero-padded raw image, horizontal flip, normalisation, cutout: torchvision's order) runs on
device with ``jax.random`` inside the jitted step, so the host only gathers uint8 batches.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

EMBEDDED_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "datasets", "fashion_mnist_subset.npz")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tfds_name: str | None = None
    flip: bool = True  # horizontal flips are label-preserving


DATASETS: dict[str, DatasetInfo] = {
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, (0.2860,), (0.3530,)),
    "cifar10": DatasetInfo("cifar10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "cifar10"),
    "cifar100": DatasetInfo("cifar100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "cifar100"),
    "svhn": DatasetInfo("svhn", 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), "svhn_cropped",
                        flip=False),
    "imagenet2012": DatasetInfo("imagenet2012", 1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                                "imagenet2012"),
}


class DatasetNotPreparedError(FileNotFoundError):
    pass


def info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}")
    return DATASETS[name]


def tfds_data_dir(data_dir: str | None = None) -> str:
    return data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _require_prepared(tfds_name: str, data_dir: str) -> None:
    root = os.path.join(data_dir, tfds_name)
    ok = os.path.isdir(root) and any(
        os.path.exists(os.path.join(root, v, "dataset_info.json")) for v in os.listdir(root))
    if not ok:
        raise DatasetNotPreparedError(
            f"dataset {tfds_name!r} is not prepared in {data_dir}; prepare it once (needs TensorFlow and "
            f"the internet): pip install -e '.[tfds]' && python -c \"import tensorflow_datasets as tfds; "
            f"tfds.builder('{tfds_name}', data_dir='{data_dir}').download_and_prepare(file_format='array_record')\" "
            f"(or set TFDS_DATA_DIR / config.data_dir)")


def load_embedded(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The embedded Fashion-MNIST subset: ``(uint8 (N, 28, 28, 1), int32 (N,))``."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r} for fashion_mnist; accepted: train, test")
    with np.load(EMBEDDED_PATH) as d:
        return d[f"{split}_images"], d[f"{split}_labels"].astype(np.int32)


def tfds_source(name: str, split: str, data_dir: str | None = None, check: bool = True):
    """A random-access ``tfds.data_source`` (no TensorFlow needed to read)."""
    import tensorflow_datasets as tfds

    d = info(name)
    data_dir = tfds_data_dir(data_dir)
    if check:
        _require_prepared(d.tfds_name, data_dir)
    return tfds.data_source(d.tfds_name, split=split, data_dir=data_dir, download=False)


def load(name: str, split: str, data_dir: str | None = None, check: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Whole split as numpy arrays (small datasets: CIFAR, SVHN, the embedded one)."""
    d = info(name)
    if d.tfds_name is None:
        return load_embedded(split)
    src = tfds_source(name, split, data_dir, check)
    n = len(src)
    try:
        records = src.__getitems__(list(range(n)))
    except (AttributeError, TypeError):  # older/mocked sources: one record at a time
        records = [src[i] for i in range(n)]
    images = np.stack([np.asarray(r["image"]) for r in records]).astype(np.uint8)
    labels = np.asarray([r["label"] for r in records], np.int32)
    return images, labels


def load_search_data(dataset: str, data_dir=None, max_examples: int = 0, image_size: int = 0,
                     portion: float = 0.5):
    """The training split of ``dataset``, optionally truncated to ``max_examples`` and
    padded (larger) or resized (smaller) to ``image_size``, split as in DARTS:
    ``((weight_x, weight_y), (arch_x, arch_y))``."""
    images, labels = load(dataset, "train", data_dir)
    if max_examples:
        images, labels = images[:max_examples], labels[:max_examples]
    if image_size and image_size != images.shape[1]:
        images = pad_to(images, image_size) if image_size > images.shape[1] else resize(images, image_size)
    return search_split(images, labels, portion)


def search_split(images: np.ndarray, labels: np.ndarray, portion: float = 0.5):
    """DARTS split of the training set: the first ``portion`` trains the weights, the
    rest is the architecture ("validation") set. ``portion=1`` (one-level StacNAS: both on
    all the data): both sets are the whole training set."""
    if portion == 1:
        return (images, labels), (images, labels)
    n = int(len(images) * portion)
    return (images[:n], labels[:n]), (images[n:], labels[n:])


@dataclasses.dataclass
class BatchStream:
    """Deterministic shuffled batches; epoch ``e`` uses permutation ``rng(seed, e)``.

    The last incomplete batch is dropped (static shapes: one compilation).
    """

    images: np.ndarray
    labels: np.ndarray
    batch_size: int
    seed: int

    def __post_init__(self):
        if len(self.images) < self.batch_size:
            raise ValueError(f"batch_size {self.batch_size} is larger than the split ({len(self.images)} examples)")

    @property
    def steps_per_epoch(self) -> int:
        return len(self.images) // self.batch_size

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.images))

    def batch(self, epoch: int, step: int) -> dict[str, np.ndarray]:
        """Batch ``step`` of ``epoch`` (step wraps around the epoch)."""
        return next(self.epoch(epoch, step, 1))

    def epoch(self, epoch: int, start_step: int = 0, num_steps: int | None = None) -> Iterator[dict]:
        perm = self.permutation(epoch)
        stop = self.steps_per_epoch if num_steps is None else start_step + num_steps
        for step in range(start_step, stop):
            i = (step % self.steps_per_epoch) * self.batch_size
            idx = perm[i:i + self.batch_size]
            yield {"image": self.images[idx], "label": self.labels[idx]}


def normalize(images: jax.Array, mean, std) -> jax.Array:
    """uint8 NHWC -> float32, ``(x/255 - mean) / std`` per channel."""
    x = images.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


CROP_FILLS = ("raw", "normalized")
"""Where the random crop's zero padding is applied: ``'raw'`` (the default) pads the raw
image with 0 before normalising, as torchvision's ``RandomCrop(padding=p)`` before
``ToTensor``/``Normalize`` in every reference: the border is black. ``'normalized'`` pads the
normalised image with 0, a border of the dataset's mean colour (jaxdarts before 2026-12-04;
kept so that runs started then resume with the transform they began with)."""


def check_crop_fill(crop_fill: str) -> str:
    if crop_fill not in CROP_FILLS:
        raise ValueError(f"data.crop_fill={crop_fill!r}; accepted: {', '.join(map(repr, CROP_FILLS))}")
    return crop_fill


def augment(key: jax.Array, images: jax.Array, mean, std, *, pad: int = 4, flip: bool = True, cutout: int = 0,
            cutout_prob=1.0, crop_fill: str = "raw") -> jax.Array:
    """The training transform of the references, per sample, on device; uint8 NHWC in,
    normalised float32 out.

    The order of torchvision's ``Compose([RandomCrop(size, padding=pad), RandomHorizontalFlip(),
    ToTensor(), Normalize(mean, std), Cutout(cutout)])``: the crop pads the *raw* image with 0
    (a black border; ``crop_fill='normalized'`` pads after normalising instead, see
    :data:`CROP_FILLS`), then the flip, then :func:`normalize`, then cutout, which zeroes a
    square of the normalised image as the references' ``Cutout`` after ``Normalize`` does.
    ``cutout`` is the square side (DeVries & Taylor: a square centred at a uniform pixel,
    clipped at the border); ``cutout_prob`` may be traced (RobustDARTS ramps it).
    """
    check_crop_fill(crop_fill)
    x = images if crop_fill == "raw" else normalize(images, mean, std)
    n, h, w, _ = x.shape
    k_crop, k_flip, k_cut, k_p = jax.random.split(key, 4)
    if pad:
        xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        offs = jax.random.randint(k_crop, (n, 2), 0, 2 * pad + 1)
        x = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, im.shape[-1])))(xp, offs)
    if flip:
        do = jax.random.bernoulli(k_flip, 0.5, (n, 1, 1, 1))
        x = jnp.where(do, x[:, :, ::-1, :], x)
    if crop_fill == "raw":
        x = normalize(x, mean, std)
    if cutout:
        centre = jax.random.randint(k_cut, (n, 2), 0, jnp.array([h, w]))
        ys = jnp.arange(h)[None, :, None]
        xs = jnp.arange(w)[None, None, :]
        cy, cx = centre[:, 0, None, None], centre[:, 1, None, None]
        inside = (ys >= cy - cutout // 2) & (ys < cy + cutout - cutout // 2) & \
                 (xs >= cx - cutout // 2) & (xs < cx + cutout - cutout // 2)
        apply = jax.random.bernoulli(k_p, cutout_prob, (n, 1, 1))
        x = jnp.where((inside & apply)[..., None], 0.0, x)
    return x


def pad_to(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pads uint8 NHWC images symmetrically to ``size x size`` (28 -> 32)."""
    h, w = images.shape[1:3]
    if size < h or size < w:
        raise ValueError(f"pad_to size {size} is smaller than the images ({h}x{w})")
    ph, pw = size - h, size - w
    return np.pad(images, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of uint8 NHWC images to ``size x size`` (tiny test runs)."""
    out = jax.image.resize(jnp.asarray(images, jnp.float32), (images.shape[0], size, size, images.shape[3]),
                           "bilinear")
    return np.asarray(jnp.clip(jnp.round(out), 0, 255)).astype(np.uint8)


# ------------------------------------------------------------------ ImageNet (host side)
def _resize_bilinear(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of one HxWxC image (align_corners=False, as PIL/torchvision
    without antialiasing), float32 out."""
    H, W = img.shape[:2]
    ys = np.clip((np.arange(h) + 0.5) * H / h - 0.5, 0, H - 1)
    xs = np.clip((np.arange(w) + 0.5) * W / w - 0.5, 0, W - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, H - 1), np.minimum(x0 + 1, W - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    im = img.astype(np.float32)
    top = im[y0][:, x0] * (1 - wx) + im[y0][:, x1] * wx
    bot = im[y1][:, x0] * (1 - wx) + im[y1][:, x1] * wx
    return top * (1 - wy) + bot * wy


def random_resized_crop(rng: np.random.Generator, img: np.ndarray, size: int, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> np.ndarray:
    """torchvision ``RandomResizedCrop`` (10 tries, then a centre crop of the clamped
    ratio) followed by a horizontal flip with probability 1/2; uint8 out."""
    H, W = img.shape[:2]
    area = H * W
    for _ in range(10):
        a = area * rng.uniform(*scale)
        r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
        if 0 < w <= W and 0 < h <= H:
            i, j = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
            break
    else:
        r0 = W / H
        w, h = (W, int(round(W / ratio[0]))) if r0 < ratio[0] else \
            ((int(round(H * ratio[1])), H) if r0 > ratio[1] else (W, H))
        w, h = min(w, W), min(h, H)
        i, j = (H - h) // 2, (W - w) // 2
    out = _resize_bilinear(img[i:i + h, j:j + w], size, size)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def center_crop(img: np.ndarray, size: int, resize_to: int | None = None) -> np.ndarray:
    """``Resize(resize_to)`` (shorter side; default ``size * 256 / 224``) then
    ``CenterCrop(size)``, as the ImageNet evaluation transform; uint8 out."""
    resize_to = resize_to or int(round(size * 256 / 224))
    H, W = img.shape[:2]
    h, w = (resize_to, max(1, int(round(W * resize_to / H)))) if H <= W else \
        (max(1, int(round(H * resize_to / W))), resize_to)
    im = _resize_bilinear(img, h, w)
    i, j = (h - size) // 2, (w - size) // 2
    return np.clip(np.round(im[i:i + size, j:j + size]), 0, 255).astype(np.uint8)


class ImageSource:
    """Random access to a decoded-image source (``tfds.data_source`` of ImageNet) that
    returns fixed-size uint8 batches: ``read(idx, epoch)`` -> ``{'image', 'label'}``.
    Training: :func:`random_resized_crop` seeded by ``(seed, epoch, index)`` (deterministic,
    the same on resume and independent of the host count); evaluation: :func:`center_crop`.
    Grey-scale or RGBA records are made RGB. ``len()`` and ``shape`` without reading."""

    def __init__(self, source, size: int, train: bool, seed: int = 0):
        self.source, self.size, self.train, self.seed = source, size, train, seed
        self.shape = (len(source), size, size, 3)

    def __len__(self):
        return len(self.source)

    def _records(self, idx):
        try:
            return self.source.__getitems__([int(i) for i in idx])
        except (AttributeError, TypeError):
            return [self.source[int(i)] for i in idx]

    def read(self, idx, epoch: int = 0) -> dict[str, np.ndarray]:
        images, labels = [], []
        for i, r in zip(idx, self._records(idx)):
            im = np.asarray(r["image"])
            im = im[..., None] if im.ndim == 2 else im
            im = np.repeat(im, 3, -1) if im.shape[-1] == 1 else im[..., :3]
            if self.train:
                im = random_resized_crop(np.random.default_rng([self.seed, epoch, int(i)]), im, self.size)
            else:
                im = center_crop(im, self.size)
            images.append(im)
            labels.append(int(r["label"]))
        return {"image": np.stack(images), "label": np.asarray(labels, np.int32)}

    def __getitem__(self, idx):
        return self.read(np.atleast_1d(idx))["image"]


def imagenet_sources(data_dir=None, size: int = 224, seed: int = 0):
    """``((train, train), (val, val))`` :class:`ImageSource` pairs for TFDS ``imagenet2012``
    (labels are read with the images); a clear error at once when it is not prepared
    (ImageNet needs a manual download: see the TFDS catalogue)."""
    train = ImageSource(tfds_source("imagenet2012", "train", data_dir), size, True, seed)
    val = ImageSource(tfds_source("imagenet2012", "validation", data_dir), size, False, seed)
    return (train, train), (val, val)


def color_jitter(key: jax.Array, x: jax.Array, strength: float = 0.4) -> jax.Array:
    """Per-image random brightness, contrast and saturation factors in
    ``[1 - strength, 1 + strength]`` (torchvision ``ColorJitter(s, s, s)`` on device, in a
    fixed order; the reference's hue jitter is not applied). ``x``: normalised or not,
    NHWC with 3 channels."""
    n = x.shape[0]
    kb, kc, ks = jax.random.split(key, 3)
    f = lambda k: jax.random.uniform(k, (n, 1, 1, 1), minval=1 - strength, maxval=1 + strength)  # noqa: E731
    x = x * f(kb)
    grey = jnp.mean(x, axis=-1, keepdims=True)
    x = (x - jnp.mean(grey, axis=(1, 2, 3), keepdims=True)) * f(kc) + jnp.mean(grey, axis=(1, 2, 3), keepdims=True)
    grey = jnp.mean(x, axis=-1, keepdims=True)
    return (x - grey) * f(ks) + grey
