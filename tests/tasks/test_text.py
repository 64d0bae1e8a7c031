import pytest
import torch

from tenfold.tasks.text import CharCorpus, pydoc_text


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
