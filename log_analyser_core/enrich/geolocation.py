"""Offline country and network owner (ASN) of client addresses; no network is ever used.

The default source is geoip2fast, which ships MaxMind GeoLite2 country and ASN data inside the
package (its date is in ``data_date()`` and ``log_analyser --version``). A user's own MaxMind
``.mmdb`` files (GeoLite2/GeoIP2 Country, City or ASN; ``--geoip-db``, repeatable) take precedence
field by field, and geoip2fast fills whatever they leave out.
"""
from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from log_analyser_core.errors import ConfigError
from log_analyser_core.parsing.address import canonical
from log_analyser_core.results import Geo

log = logging.getLogger(__name__)

GEOIP2FAST_DATA = "geoip2fast-asn-ipv6.dat.gz"   # country + ASN, IPv4 and IPv6
_COUNTRY_CODE = re.compile(r"^[A-Z]{2}$")


class Locator(Protocol):
    """Anything that maps an address to a Geo (fields None where it does not know)."""

    @property
    def description(self) -> str: ...

    def locate(self, ip: str) -> Geo: ...


def is_public(ip: str) -> bool:
    """True for a globally routable unicast address: private, loopback, link-local, reserved,
    multicast and documentation ranges (192.0.2.0/24, 2001:db8::/32, ...) are not public."""
    text = canonical(ip)   # a scoped or otherwise odd form is not an address: never sent anywhere
    if text is None:
        return False
    address = ipaddress.ip_address(text)
    return address.is_global and not address.is_multicast


def _country(code: object) -> str | None:
    return code if isinstance(code, str) and _COUNTRY_CODE.match(code) else None


class PackagedGeo:
    """geoip2fast's bundled GeoLite2 data, loaded on first use (about 0.3 s and 160 MB)."""

    def __init__(self) -> None:
        self._reader = None
        self.description = "geoip2fast"

    def _load(self):
        if self._reader is None:
            import geoip2fast
            from geoip2fast import GeoIP2Fast

            # an absolute path: geoip2fast would otherwise look in the working directory first
            data = Path(geoip2fast.__file__).with_name(GEOIP2FAST_DATA)
            self._reader = GeoIP2Fast(geoip2fast_data_file=str(data))
            self.description = f"geoip2fast {geoip2fast.__version__} (GeoLite2 data of {self.data_date()})"
        return self._reader

    def data_date(self) -> str | None:
        """The date of the bundled GeoLite2 data as YYYY-MM-DD."""
        source = str(self._load().get_database_info().get("source_info", ""))
        match = re.search(r"(\d{4})(\d{2})(\d{2})$", source)
        return "-".join(match.groups()) if match else None

    def locate(self, ip: str) -> Geo:
        if not is_public(ip):
            return Geo()
        detail = self._load().lookup(ip)
        return Geo(country=_country(getattr(detail, "country_code", None)), asn=None,
                   as_org=getattr(detail, "asn_name", None) or None)


class MaxMindGeo:
    """A MaxMind DB file: country from ``country`` (or ``registered_country``), ASN from
    ``autonomous_system_number`` / ``autonomous_system_organization``."""

    def __init__(self, path: str) -> None:
        import maxminddb

        try:
            self._reader = maxminddb.open_database(path)
        except FileNotFoundError:
            raise ConfigError("GeoIP database not found", path=path) from None
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise ConfigError(f"not a MaxMind database: {exc}", path=path,
                              hint="pass a GeoLite2/GeoIP2 .mmdb file to --geoip-db") from None
        self.description = f"{Path(path).name} ({self._reader.metadata().database_type})"

    def locate(self, ip: str) -> Geo:
        try:
            record = self._reader.get(ip)
        except ValueError:
            return Geo()
        if not isinstance(record, dict):
            return Geo()
        country = record.get("country") or record.get("registered_country") or {}
        asn = record.get("autonomous_system_number")
        org = record.get("autonomous_system_organization")
        return Geo(country=_country(country.get("iso_code") if isinstance(country, dict) else None),
                   asn=asn if isinstance(asn, int) else None, as_org=org if isinstance(org, str) and org else None)


def merge(first: Geo, second: Geo) -> Geo:
    """Field by field, ``first`` where it knows, else ``second``."""
    return Geo(country=first.country or second.country, asn=first.asn if first.asn is not None else second.asn,
               as_org=first.as_org or second.as_org)


class GeoChain:
    """Several locators asked in order; earlier ones win field by field."""

    def __init__(self, locators: Sequence[Locator]) -> None:
        self.locators = tuple(locators)

    @property
    def description(self) -> str:
        return " + ".join(locator.description for locator in self.locators)

    def locate(self, ip: str) -> Geo:
        geo = Geo()
        for locator in self.locators:
            geo = merge(geo, locator.locate(ip))
            if geo.country and geo.asn is not None and geo.as_org:
                break
        return geo


def build_locator(mmdb_paths: Iterable[str] = ()) -> GeoChain:
    """The user's .mmdb files (opened now, so a bad path fails before any work), then geoip2fast."""
    return GeoChain([*(MaxMindGeo(path) for path in mmdb_paths), PackagedGeo()])


def locate_all(ips: Iterable[str], locator: Locator) -> dict[str, Geo]:
    """Geo for every address (about 100k lookups/s with geoip2fast)."""
    return {ip: locator.locate(ip) for ip in ips}


def packaged_data_version() -> str:
    """'geoip2fast X (GeoLite2 data of YYYY-MM-DD)' for --version; says so if the package is missing."""
    try:
        geo = PackagedGeo()
        geo._load()
    except ImportError:
        return "geoip2fast not installed"
    return geo.description
