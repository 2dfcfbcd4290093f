"""Image datasets: real file formats (tiny files), splits, statistics, augmentation, fetching."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from kubenas.storage.local import LocalStore
from kubenas.trainer.data import DatasetError, load_dataset
from kubenas.trainer.data.augment import BatchAugment, random_crop, random_flip
from kubenas.trainer.data.base import channel_stats


def _rows(split):
    """Each image as bytes, to compare splits by content."""
    return {bytes(x.numpy().tobytes()) for x in split.images}


def test_digits_search_split(tmp_path):
    train, val, info = load_dataset("digits", validation_size=0.1, seed=0)
    assert info.input_shape == (1, 8, 8) and info.num_classes == 10
    assert len(train) == 1350 and len(val) == 150 and info.split == "search"
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 8, 8)
    assert train.images.max() == 255 and set(train.labels.tolist()) == set(range(10))
    assert info.crop_padding == 1 and info.horizontal_flip is False  # digits are not mirrorable


def test_validation_split_is_disjoint_seeded_and_sized_by_fraction_or_count():
    train, val, _ = load_dataset("digits", validation_size=0.2, seed=5)
    ti, vi = set(train.indices.tolist()), set(val.indices.tolist())
    assert not ti & vi and len(ti | vi) == 1500
    assert len(val) == 300
    _, val2, _ = load_dataset("digits", validation_size=0.2, seed=5)
    assert torch.equal(val.indices, val2.indices)
    _, val3, _ = load_dataset("digits", validation_size=0.2, seed=6)
    assert not torch.equal(val.indices, val3.indices)
    _, val4, _ = load_dataset("digits", validation_size=123, seed=5)
    assert len(val4) == 123
    with pytest.raises(ValueError, match="validationSize"):
        load_dataset("digits", validation_size=1500)


def test_digits_test_split_is_held_out_from_every_search_split():
    full, test, info = load_dataset("digits", split="test")
    assert len(full) == 1500 and len(test) == 297 and info.split == "test"
    held = _rows(test)
    for seed in (0, 1):
        train, val, _ = load_dataset("digits", seed=seed)
        # sklearn's digits has a few duplicate images; compare positions where possible
        assert len(train) + len(val) == len(full)
        assert (_rows(train) | _rows(val)) == _rows(full)
    assert len(held - _rows(full)) > 250


def test_normalisation_stats_come_from_the_training_split():
    train, _, info = load_dataset("digits", seed=0)
    x = train.images.double() / 255
    assert info.mean[0] == pytest.approx(x.mean().item(), rel=1e-9)
    assert info.std[0] == pytest.approx(x.std(unbiased=False).item(), rel=1e-9)
    mean, std = channel_stats(torch.full((4, 3, 2, 2), 51, dtype=torch.uint8))
    assert mean == pytest.approx((0.2, 0.2, 0.2)) and std[0] == pytest.approx(1e-3)


def test_tiny_cifar10_pickles_load_with_the_right_layout_and_labels(tmp_path, cifar_folder_writer):
    written = cifar_folder_writer(tmp_path / "cifar-10-batches-py", per_batch=6, test=5)
    full, test, info = load_dataset("cifar10", path=str(tmp_path), split="test")  # parent dir ok
    assert full.images.shape == (30, 3, 32, 32) and test.images.shape == (5, 3, 32, 32)
    data, labels = written["data_batch_2"]
    k = 6  # first image of batch 2
    assert full.labels[k].item() == labels[0]
    img = full.images[k].numpy()
    assert img[0, 0, 0] == data[0, 0] and img[1, 0, 0] == data[0, 1024]
    assert img[2, 31, 31] == data[0, 3071] and img[0, 1, 2] == data[0, 32 + 2]
    assert test.labels.tolist() == written["test_batch"][1]
    assert info.class_names[0] == "airplane" and info.input_shape == (3, 32, 32)
    assert info.crop_padding == 4 and info.horizontal_flip is True


def test_a_search_never_opens_the_test_files(tmp_path, cifar_folder_writer, fashion_folder_writer):
    cifar_folder_writer(tmp_path / "c", per_batch=5, test=0)
    (tmp_path / "c" / "test_batch").write_bytes(b"not a pickle: reading me is a bug")
    train, val, _ = load_dataset("cifar10", path=str(tmp_path / "c"), validation_size=5)
    assert len(train) == 20 and len(val) == 5
    with pytest.raises(DatasetError, match="test_batch"):
        load_dataset("cifar10", path=str(tmp_path / "c"), split="test")

    fashion_folder_writer(tmp_path / "f", train=20, test=0)  # no t10k-* files at all
    train, val, _ = load_dataset("fashion_mnist", path=str(tmp_path / "f"), validation_size=0.25)
    assert len(train) == 15 and len(val) == 5
    with pytest.raises(DatasetError, match="t10k"):
        load_dataset("fashion_mnist", path=str(tmp_path / "f"), split="test")


def test_cifar10_needs_all_five_batches_and_refuses_code_in_pickles(tmp_path, cifar_folder_writer):
    cifar_folder_writer(tmp_path, per_batch=2, test=0)
    (tmp_path / "data_batch_5").unlink()
    with pytest.raises(DatasetError, match="data_batch_5 missing"):
        load_dataset("cifar10", path=str(tmp_path))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "data_batch_5").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DatasetError, match=r"refusing to load \w+\.print"):
        load_dataset("cifar10", path=str(tmp_path))


@pytest.mark.parametrize("gz", [True, False])
def test_tiny_fashion_mnist_idx_files_load(tmp_path, fashion_folder_writer, gz):
    written = fashion_folder_writer(tmp_path, train=12, test=4, gz=gz)
    full, test, info = load_dataset("fashion_mnist", path=str(tmp_path), split="test")
    assert full.images.shape == (12, 1, 28, 28) and test.images.shape == (4, 1, 28, 28)
    assert torch.equal(full.images[:, 0], torch.from_numpy(written["train"][0]))
    assert full.labels.tolist() == written["train"][1].tolist()
    assert test.labels.tolist() == written["t10k"][1].tolist()
    assert info.class_names[9] == "Ankle boot"


def test_a_truncated_idx_file_is_a_dataset_error(tmp_path, fashion_folder_writer):
    fashion_folder_writer(tmp_path, train=3, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(DatasetError, match="bytes follow"):
        load_dataset("fashion_mnist", path=str(tmp_path), validation_size=1)


def test_a_dataset_in_the_store_is_fetched_once(tmp_path, cifar_folder_writer):
    store = LocalStore(tmp_path / "store")
    written = cifar_folder_writer(tmp_path / "src", per_batch=3, test=2)
    for name in list(written) + ["batches.meta"]:
        store.put(f"datasets/cifar-10-batches-py/{name}", (tmp_path / "src" / name).read_bytes())
    gets = []
    real_get = store.get
    store.get = lambda key: gets.append(key) or real_get(key)
    cache = tmp_path / "cache"
    train, val, info = load_dataset("cifar10", path="datasets/cifar-10-batches-py/",
                                    validation_size=3, store=store, cache_dir=cache)
    assert len(train) == 12 and len(val) == 3 and len(gets) == 7
    load_dataset("cifar10", path="datasets/cifar-10-batches-py", validation_size=3,
                 store=store, cache_dir=cache)
    assert len(gets) == 7  # cached: not downloaded again


def test_an_s3_url_under_the_stores_root_reads_through_the_store(tmp_path, fashion_folder_writer):
    class S3Like(LocalStore):
        def url(self):
            return "s3://bucket/exp"

    store = S3Like(tmp_path / "store")
    fashion_folder_writer(tmp_path / "src", train=10)
    for p in (tmp_path / "src").iterdir():
        store.put(f"data/fmnist/{p.name}", p.read_bytes())
    train, val, _ = load_dataset("fashion_mnist", path="s3://bucket/exp/data/fmnist",
                                 validation_size=2, store=store, cache_dir=tmp_path / "cache")
    assert len(train) == 8 and len(val) == 2
    with pytest.raises(DatasetError, match="nothing in"):
        load_dataset("fashion_mnist", path="nope/", store=store, cache_dir=tmp_path / "cache")


def test_random_crop_matches_a_per_image_loop():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    got = random_crop(x, 2, torch.Generator().manual_seed(1))
    off = torch.randint(0, 5, (2, 16), generator=torch.Generator().manual_seed(1))
    p = F.pad(x, [2] * 4)
    want = torch.stack([p[i, :, off[0, i]:off[0, i] + 8, off[1, i]:off[1, i] + 8]
                        for i in range(16)])
    assert torch.equal(got, want)


def test_flip_mirrors_about_half_and_augment_returns_unit_floats():
    x = torch.randint(0, 256, (400, 1, 4, 4), dtype=torch.uint8)
    y = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (y == x.flip(3)).flatten(1).all(1) & ~(y == x).flatten(1).all(1)
    assert 150 < flipped.sum() < 250
    assert ((y == x).flatten(1).all(1) | (y == x.flip(3)).flatten(1).all(1)).all()
    out = BatchAugment(1, True)(x, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    assert torch.equal(BatchAugment(0, False)(x), x.float() / 255)


def test_unknown_dataset_and_digits_path_are_errors():
    with pytest.raises(DatasetError, match="no image dataset 'ptb'"):
        load_dataset("ptb")
    with pytest.raises(DatasetError, match="takes no dataset.path"):
        load_dataset("digits", path="/tmp")



def test_debians_fashion_mnist_is_found_by_default():
    # `make test` installs Debian's dataset-fashion-mnist (devenv/install-tools.sh).
    train, val, info = load_dataset("fashion_mnist", validation_size=0.1)
    assert (len(train), len(val)) == (54000, 6000) and info.input_shape == (1, 28, 28)
