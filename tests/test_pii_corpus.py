"""Scrubber recall and precision per class on a labelled corpus of real-world formats.

``tests/data/pii_corpus.jsonl`` holds one sentence per line with at most one value:
international e-mail addresses, phone numbers in E.164 and national formats of many
countries, card numbers with space/dash/dot separators, IPv4 and IPv6 in every form, and
hard negatives (dates, times, versions, order ids, quantities). A positive counts as found
only when the value is replaced whole and nothing else changes, so a mangled phone number
is a miss. The figures are quoted in docs/security.md.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from caprank.scrub import scrub_pii

CORPUS = Path(__file__).parent / "data" / "pii_corpus.jsonl"
CLASSES = ("EMAIL", "PHONE", "CARD", "IP")
MIN_RECALL = 0.95
MIN_PRECISION = 0.95


def _rows() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]


def corpus_scores(scrub=scrub_pii) -> dict[str, dict[str, float]]:
    """Recall and precision of ``scrub`` per class over the corpus."""
    found, flagged, correct_flags = Counter(), Counter(), Counter()
    totals = Counter()
    for row in _rows():
        label, value, text = row["label"], row["value"], row["text"]
        out = scrub(text)
        exact = out == (text.replace(value, f"[{label}]") if value else text)
        totals[label] += 1
        for cls in CLASSES:
            if f"[{cls}]" in out:
                flagged[cls] += 1
                correct_flags[cls] += int(cls == label and exact)
        if label != "NONE" and exact:
            found[label] += 1
    return {
        cls: {
            "n": totals[cls],
            "recall": found[cls] / totals[cls],
            "precision": correct_flags[cls] / flagged[cls] if flagged[cls] else 0.0,
        }
        for cls in CLASSES
    }


def test_corpus_is_large_and_labelled():
    counts = Counter(row["label"] for row in _rows())
    assert counts["NONE"] >= 40 and all(counts[c] >= 20 for c in CLASSES)


@pytest.mark.parametrize("cls", CLASSES)
def test_recall_and_precision_per_class(cls):
    score = corpus_scores()[cls]
    assert score["recall"] >= MIN_RECALL, score
    assert score["precision"] >= MIN_PRECISION, score


def test_hard_negatives_are_untouched():
    changed = [
        r["text"] for r in _rows() if r["label"] == "NONE" and scrub_pii(r["text"]) != r["text"]
    ]
    assert changed == []


@pytest.mark.parametrize(
    "extra",
    ["call +４４ ２０ ７９４６ ０９５８", "mail a@b.io", "fe80::1 and ::ffff", "no pii here"],
)
def test_the_shortcut_skips_only_texts_no_pattern_can_match(extra: str):
    """``scrub_pii`` returns a text with no digit, "@" or ":" as it is; every corpus text
    (and a few with non-ASCII digits) scrubs exactly as with every pattern run."""
    from caprank.scrub import _scrub_every_pattern

    for text in [r["text"] for r in _rows()] + [extra]:
        assert scrub_pii(text) == _scrub_every_pattern(text), text
