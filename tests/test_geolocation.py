"""Offline geography: the data bundled with geoip2fast, and a user's own MaxMind .mmdb file."""
from __future__ import annotations

import re

import pytest

from log_analyser_core.enrich import geolocation
from log_analyser_core.errors import ConfigError
from log_analyser_core.results import Geo


@pytest.fixture(scope="module")
def packaged():
    return geolocation.PackagedGeo()


@pytest.fixture
def mmdb(tmp_path):
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Test", ipv4_compatible=True)
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"country": {"iso_code": "NL"}, "autonomous_system_number": 64500,
                                                  "autonomous_system_organization": "Test Net"})
    writer.insert_network(IPSet(["9.9.9.0/24"]), {"registered_country": {"iso_code": "SE"}})
    path = tmp_path / "test.mmdb"
    writer.to_db_file(str(path))
    return str(path)


@pytest.mark.parametrize(("ip", "country", "org"), [
    ("8.8.8.8", "US", "GOOGLE"), ("2001:4860:4860::8888", "US", "GOOGLE"), ("1.1.1.1", "AU", "CLOUDFLARENET"),
])
def test_bundled_data_knows_public_addresses(packaged, ip, country, org):
    assert packaged.locate(ip) == Geo(country=country, asn=None, as_org=org)


@pytest.mark.parametrize("ip", ["10.1.2.3", "192.168.0.1", "127.0.0.1", "::1", "198.51.100.7", "2001:db8::1", "x"])
def test_private_and_documentation_addresses_have_no_geography(packaged, ip):
    assert packaged.locate(ip) == Geo()


def test_the_bundled_data_date_is_known(packaged):
    assert re.fullmatch(r"20\d\d-\d\d-\d\d", packaged.data_date())
    assert packaged.data_date() in geolocation.packaged_data_version()


def test_a_maxmind_file_comes_first_and_the_bundled_data_fills_gaps(mmdb):
    chain = geolocation.build_locator([mmdb])
    assert chain.locate("8.8.8.8") == Geo(country="NL", asn=64500, as_org="Test Net")
    assert chain.locate("9.9.9.9").country == "SE" and chain.locate("9.9.9.9").as_org   # org from geoip2fast
    assert chain.locate("1.1.1.1") == Geo(country="AU", asn=None, as_org="CLOUDFLARENET")
    assert "test.mmdb (GeoLite2-Test)" in chain.description and "geoip2fast" in chain.description


def test_a_missing_or_bad_maxmind_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        geolocation.build_locator([str(tmp_path / "nope.mmdb")])
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(ConfigError, match="not a MaxMind database"):
        geolocation.build_locator([str(junk)])


def test_merge_keeps_the_first_known_value():
    assert geolocation.merge(Geo(country="DE"), Geo(country="FR", asn=1, as_org="x")) == Geo("DE", 1, "x")
    assert geolocation.merge(Geo(asn=0), Geo(asn=5)).asn == 0
