"""events.text_masks: each pattern matched on the distinct values and mapped back to every row, by
one pass per matching pattern or, when several match, by one join; either way the masks are what
matching every row's text (null as the empty string) gives."""
from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from log_analyser_core.parsing import events

PATTERNS = {"admin": r"^/admin", "php": r"\.php$", "empty": r"^$", "dots": r"\.\./", "never": r"^zzz$",
            "upper": r"[A-Z]"}
VALUES = st.lists(st.one_of(st.none(), st.sampled_from(["/admin/x", "/a.php", "", "/../etc", "/Index", "/ok"]),
                            st.text(alphabet="/.aAphdmin", max_size=8)), max_size=60)


def _expected(values: pl.Series, patterns: dict[str, str], transform=None) -> dict[str, list[bool]]:
    text = values.cast(pl.String).fill_null("")
    text = transform(text) if transform is not None else text
    return {name: text.str.contains(pattern).to_list() for name, pattern in patterns.items()}


@settings(max_examples=150, deadline=None, derandomize=True)
@given(values=VALUES, chosen=st.lists(st.sampled_from(sorted(PATTERNS)), min_size=1, max_size=6, unique=True),
       categorical=st.booleans())
def test_masks_are_every_rows_match(values, chosen, categorical):
    series = pl.Series("path", values, dtype=pl.String)
    series = series.cast(pl.Categorical) if categorical else series
    patterns = {name: PATTERNS[name] for name in chosen}
    masks = events.text_masks(series, patterns)
    assert list(masks) == chosen
    assert {name: mask.to_list() for name, mask in masks.items()} == _expected(series, patterns)
    assert all(mask.len() == series.len() and mask.null_count() == 0 for mask in masks.values())


@pytest.mark.parametrize("count", [1, 2, events.JOIN_FROM_PATTERNS, 6])
def test_both_ways_of_mapping_back_and_a_transform(count, monkeypatch):
    series = pl.Series("path", ["/ADMIN/x", None, "/a.PHP", "/ok", "", "/admin/x", None, "/../"])
    patterns = dict(list({"admin": r"^/admin", "php": r"\.php$", "empty": r"^$", "dots": r"\.\./",
                          "never": r"^zzz$", "upper": r"[a-z]"}.items())[:count])
    lower = lambda text: text.str.to_lowercase()   # noqa: E731
    joined = []
    join = pl.DataFrame.join
    monkeypatch.setattr(pl.DataFrame, "join", lambda self, *a, **k: joined.append(1) or join(self, *a, **k))
    masks = events.text_masks(series, patterns, transform=lower)
    assert {name: mask.to_list() for name, mask in masks.items()} == _expected(series, patterns, lower)
    matching = sum(any(v) for v in _expected(series, patterns, lower).values())
    assert bool(joined) == (matching >= events.JOIN_FROM_PATTERNS)
