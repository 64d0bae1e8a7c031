import pytest
import torch

from tenfold.tasks.text import (
    TORCH_SOURCE_SHA256,
    UNKNOWN,
    CharCorpus,
    pydoc_text,
    torch_source_files,
    torch_source_text,
)


def test_pydoc_corpus_is_deterministic_and_split_90_10():
    text = pydoc_text()
    assert text == pydoc_text() and len(text) > 100_000
    corpus = CharCorpus(text)
    train, val = corpus.splits["train"], corpus.splits["val"]
    assert len(train) + len(val) == len(text)
    assert len(train) == int(len(text) * 0.9)
    assert corpus.decode(val[:50]) == text[len(train): len(train) + 50]
    assert corpus.vocab_size == len(set(text))


def test_batches_are_shifted_windows_and_seeded():
    corpus = CharCorpus("abcdefghij" * 20)
    x, y = corpus.batch("train", 4, 6, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 6)
    assert torch.equal(x[:, 1:], y[:, :-1])
    x2, _ = corpus.batch("train", 4, 6, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    for row in x:  # every window is contiguous text
        assert corpus.decode(row) in "abcdefghij" * 20


def test_validation_windows_cover_the_split_without_overlap():
    corpus = CharCorpus("".join(chr(97 + i % 26) for i in range(1000)))
    xs, ys = zip(*corpus.windows("val", 8, batch_size=5))
    x, y = torch.cat(xs), torch.cat(ys)
    assert len(x) == corpus.num_windows("val", 8) == (100 - 1) // 8
    assert torch.equal(x.reshape(-1), corpus.splits["val"][: len(x) * 8])
    assert torch.equal(y.reshape(-1), corpus.splits["val"][1: len(x) * 8 + 1])


def test_bad_arguments():
    with pytest.raises(ValueError, match="val_fraction"):
        CharCorpus("abcdef", val_fraction=1.5)
    with pytest.raises(ValueError, match="split"):
        CharCorpus("abcdefgh" * 4).batch("test", 2, 3)
    with pytest.raises(ValueError, match="context"):
        CharCorpus("abcdefgh" * 4).batch("train", 2, 500)


def test_from_splits_keeps_the_splits_apart_and_stores_bytes():
    corpus = CharCorpus.from_splits("hello world\n", b"low held", {"source": "test"})
    assert corpus.chars == sorted(set("hello world\nlow held"))
    assert corpus.splits["train"].dtype == torch.uint8
    assert corpus.decode(corpus.splits["val"]) == "low held"
    x, y = corpus.batch("train", 3, 4, torch.Generator().manual_seed(0))
    assert x.dtype == torch.long and torch.equal(x[:, 1:], y[:, :-1])
    assert corpus.info() == {"source": "test", "vocab": len(corpus.chars), "train_chars": 12, "val_chars": 8}
    with pytest.raises(ValueError, match="ASCII"):
        CharCorpus.from_splits("héllo", "abc")


def test_torch_source_text_is_built_from_sorted_files(tmp_path):
    for name, text in (("b.py", "bé\tb"), ("a/x.py", "ax"), ("version.py", "skip"), ("c.txt", "no")):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    files = [f.relative_to(tmp_path).as_posix() for f in torch_source_files(tmp_path)]
    assert files == ["a/x.py", "b.py"]
    train, val = torch_source_text(tmp_path)
    assert train == b"ax\n\nb" + UNKNOWN.encode() + UNKNOWN.encode() + b"b\n\n" and val == b""


def test_torch_source_corpus_is_the_recorded_one_and_large():
    corpus = CharCorpus.torch_source()
    info = corpus.info()
    assert info["sha256"] == TORCH_SOURCE_SHA256, "the installed torch sources differ from the recorded corpus"
    assert info["train_chars"] >= 20_000_000 and info["val_chars"] >= 1_000_000
    assert corpus.vocab_size <= 97
