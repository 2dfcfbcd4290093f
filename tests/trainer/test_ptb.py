"""The word-level Penn Treebank loader: the real corpus, folders, the object store, batches."""

from __future__ import annotations

import hashlib

import pytest
import torch

from kubenas.storage.local import LocalStore
from kubenas.trainer.data import ptb
from kubenas.trainer.data.base import DatasetError

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_memo():
    saved = dict(ptb._CORPUS_CACHE)
    yield
    ptb._CORPUS_CACHE.clear()
    ptb._CORPUS_CACHE.update(saved)


def test_the_packaged_corpus_is_mikolovs_ptb():
    corpus = ptb.load_ptb()                      # search form: no test split
    assert corpus.test is None and set(corpus.md5) == {"train", "valid"}
    assert corpus.vocab_size == 10_000
    assert {"<unk>", "<eos>", "the", "N"} <= set(corpus.vocab)
    # The texts are byte-identical to the reference ptb.train.txt / ptb.valid.txt.
    assert corpus.md5 == {s: ptb.MD5[s] for s in ("train", "valid")}
    assert corpus.train.numel() == ptb.NUM_TOKENS["train"] == 929_589
    assert corpus.valid.numel() == ptb.NUM_TOKENS["valid"] == 73_760
    assert corpus.train.dtype == torch.long and int(corpus.train.max()) < 10_000
    full = ptb.load_ptb(include_test=True)       # the final evaluation's form
    assert full.md5["test"] == ptb.MD5["test"] and full.test.numel() == 82_430
    assert full.vocab == corpus.vocab


def test_tokenisation_appends_eos_per_line():
    assert ptb.tokenize(" a b \n c \n") == ["a", "b", "<eos>", "c", "<eos>"]


def _write_tiny(folder, names=("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")):
    folder.mkdir(parents=True, exist_ok=True)
    texts = [" the cat sat \n the dog <unk> \n", " the cat \n", " a dog ran \n"]
    for name, text in zip(names, texts):
        (folder / name).write_text(text)
    return texts


def test_reads_a_folder_and_maps_unknown_words_to_unk(tmp_path):
    texts = _write_tiny(tmp_path / "ptb")
    corpus = ptb.load_ptb(str(tmp_path / "ptb"), include_test=True)
    assert corpus.vocab[:2] == ["the", "<eos>"]                       # most frequent first
    assert set(corpus.vocab) == {"the", "cat", "sat", "dog", "<unk>", "<eos>"}
    w = corpus.word_to_id()
    assert corpus.test.tolist() == [w["<unk>"], w["dog"], w["<unk>"], w["<eos>"]]  # a, ran unknown
    assert corpus.md5["train"] == hashlib.md5(texts[0].encode()).hexdigest()
    # The short names work too, and a missing split is a dataset error naming the file.
    _write_tiny(tmp_path / "short", ("train.txt", "valid.txt", "test.txt"))
    assert ptb.load_ptb(str(tmp_path / "short")).vocab == corpus.vocab
    (tmp_path / "short" / "valid.txt").unlink()
    ptb._CORPUS_CACHE.clear()                            # (loads are memoised per process)
    with pytest.raises(DatasetError, match="ptb.valid.txt"):
        ptb.load_ptb(str(tmp_path / "short"))


def test_reads_a_store_prefix_through_a_local_cache(tmp_path):
    store = LocalStore(tmp_path / "store")
    src = tmp_path / "src"
    _write_tiny(src)
    for f in src.iterdir():
        store.put(f"datasets/ptb/{f.name}", f.read_bytes())
    cache = tmp_path / "cache"
    corpus = ptb.load_ptb("datasets/ptb", store=store, cache_dir=str(cache))
    assert corpus.vocab_size == 6
    assert list(cache.rglob("ptb.train.txt"))            # fetched into the cache
    # A second process reads the cache, not the store.
    ptb._CORPUS_CACHE.clear()
    for f in src.iterdir():
        store.delete(f"datasets/ptb/{f.name}")
    assert ptb.load_ptb("datasets/ptb", store=store, cache_dir=str(cache)).vocab == corpus.vocab


def test_batchify_and_get_batch():
    ids = torch.arange(23)
    data = ptb.batchify(ids, 4)                          # 5 rows of 4 columns, 3 tokens dropped
    assert data.shape == (5, 4)
    assert data[:, 1].tolist() == [5, 6, 7, 8, 9]        # each column a contiguous stream
    x, y = ptb.get_batch(data, 0, 3)
    assert x.shape == y.shape == (3, 4) and torch.equal(y, x + 1)
    x, y = ptb.get_batch(data, 3, 3)                     # the last window is shorter
    assert x.shape == (1, 4) and y[0].tolist() == [4, 9, 14, 19]
    with pytest.raises(DatasetError):
        ptb.batchify(torch.arange(3), 4)
