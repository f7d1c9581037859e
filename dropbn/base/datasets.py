"""Facts about the built-in data sets, defined once.

Torch-free on purpose: the config check, the data layer and the report (which
never imports torch) all read these facts from here.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class DatasetFacts:
    name: str                      # config value of data.name
    label: str                     # human name in logs and reports
    classes: tuple[str, ...]       # class names, in label order
    train_images: int              # training images before data.val_size is held out
    test_images: int
    shape: tuple[int, int, int]    # (C, H, W)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
# the built-in data sets; dropbn.train.data.SOURCES says where their files are and how to read them
DATASETS: dict[str, DatasetFacts] = {f.name: f for f in (
    DatasetFacts("mnist", "MNIST", tuple(str(i) for i in range(10)), 60000, 10000, (1, 28, 28)),
    DatasetFacts("fashion_mnist", "Fashion-MNIST",
                 ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"), 60000, 10000, (1, 28, 28)),
    DatasetFacts("cifar10", "CIFAR-10", CIFAR10_CLASSES, 50000, 10000, (3, 32, 32)),
    # CIFAR-10 re-encoded as JPEG (quality 75), as an image-folder archive: a lossy copy whose
    # accuracies run a little below CIFAR-10's, so it carries its own label
    DatasetFacts("cifar10_jpeg", "CIFAR-10 (JPEG q75 mirror)", CIFAR10_CLASSES, 50000, 10000, (3, 32, 32)),
)}


def check_batch_size(batch_size: int, n_train: int, what: str = "") -> None:
    """A pass over the training set needs one batch: checked by the config validation for data sets of
    known size, and by the training loop where an image folder's size becomes known, before anything trains."""
    if batch_size > n_train:
        raise ConfigError("train.batch_size", batch_size, f"must be <= the training-set size ({n_train}{what})")
