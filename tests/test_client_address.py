"""The one notion of a client address: canonical text or nothing, whatever a log holds."""
from __future__ import annotations

import ipaddress

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from log_analyser_core.parsing.address import canonical, canonical_all, is_canonical
from log_analyser_core.parsing.events import address


@pytest.mark.parametrize(("text", "expected"), [
    ("192.0.2.9", "192.0.2.9"),
    ("2001:DB8:0:0::1", "2001:db8::1"),
    ("::ffff:192.0.2.9", "192.0.2.9"),
    ("fe80::1%1\n-I INPUT 1 -j ACCEPT\n#", None),
    ("fe80::1%eth0", None),
    ("fe80::1%1;include'evil.conf';#", None),
    ("192.0.2.9;include x", None),
    ("example.org", None),
    ("", None),
    (None, None),
])
def test_canonical(text, expected):
    assert canonical(text) == expected


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_anything_canonical_is_plain_address_text(text):
    result = canonical(text)
    if result is not None:
        assert set(result) <= set("0123456789abcdef.:")
        assert str(ipaddress.ip_address(result)) == result and is_canonical(result)


@given(st.ip_addresses())
def test_every_unscoped_address_is_kept(address):
    assert canonical(str(address)) is not None


IPV6_TEXT = st.one_of(
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=6).map(lambda a: a.exploded.upper()),
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
    st.ip_addresses(v=4).map(lambda a: f"::{a}"),
    st.tuples(st.ip_addresses(v=6), st.text(max_size=8)).map(lambda p: f"{p[0]}%{p[1]}"),
    st.text(alphabet="0123456789abcdefABCDEF:.%", max_size=45),
    st.none(),
)


@given(st.lists(IPV6_TEXT, max_size=30))
def test_many_texts_made_canonical_at_once_are_each_made_canonical(texts):
    assert canonical_all(texts) == [canonical(text) for text in texts]


CANONICAL = {"2001:DB8::1": "2001:db8::1", "2001:db8::2": "2001:db8::2", "192.0.2.1": "192.0.2.1",
             "10.0.0.1:80": "10.0.0.1", "[2001:db8::3]:443": "2001:db8::3", "fe80::1%eth0": None, "host": None,
             "::ffff:1.2.3.4": "1.2.3.4", None: None}


@given(st.lists(st.sampled_from(list(CANONICAL)), max_size=40))
def test_an_address_column_is_each_value_made_canonical(values):
    """Whether many, few or none of the distinct values change, each row gets its own."""
    column = pl.DataFrame({"ip": pl.Series(values, dtype=pl.String)}).select(address("ip"))["ip"].to_list()
    assert column == [CANONICAL[v] for v in values]
