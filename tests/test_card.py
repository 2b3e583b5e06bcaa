"""The one card reader/writer: JSON-safe atomic writes; reads that say what is wrong with a card."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from stylestream.card import CardError, read_card, write_card


def test_round_trip_is_plain_json(tmp_path):
    path = tmp_path / "card.json"
    write_card(path, {"loss": math.nan, "out": Path("/x/y"), "steps": [1, 2], "_private": 1})
    assert read_card(path) == {"loss": "nan", "out": "/x/y", "steps": [1, 2]}


def test_bad_cards_are_named_and_untrusted_ones_are_size_limited(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "big.json").write_text('{"a": "' + "x" * 5000 + '"}')
    with pytest.raises(CardError, match="list.json: a model card must be a JSON object"):
        read_card(tmp_path / "list.json")
    with pytest.raises(CardError, match="bad.json: not a readable model card"):
        read_card(tmp_path / "bad.json")
    with pytest.raises(CardError, match="over the 1 KiB limit"):
        read_card(tmp_path / "big.json", max_bytes=1024)
    assert read_card(tmp_path / "big.json")["a"].startswith("x")
    assert read_card(tmp_path / "missing.json", missing_ok=True) == {}
    assert read_card(tmp_path / "bad.json", missing_ok=True) == {}
