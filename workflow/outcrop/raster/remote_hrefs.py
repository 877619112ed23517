"""What a STAC document read over HTTP may send outcrop to read.

A catalog, item or search page fetched from a server is someone else's text. Its hrefs decide what
GDAL and the HTTP client open next, so a hostile (or broken) document could make outcrop read this
machine's files (``file:///…``, GDAL's ``/vsi…`` paths, which also reach other protocols and hosts)
or make requests to this machine's or its network's services (``http://169.254.169.254/…``, a
cloud's metadata service; ``http://127.0.0.1:…``; ``http://10.…``) and write what they answer into
a run.

The policy, for every href of a document read over HTTP:

- It is resolved as a URL reference against the document's URL (RFC 3986, as pystac does): a
  relative href, and a root-relative one (``/data/x.tif``), name a file on the document's own
  server, never a local path.
- The result must be an ``http`` or ``https`` URL; an asset (a band raster) may also be ``s3://``
  or ``gs://``, object storage that GDAL reaches at the cloud's own endpoints (Earth Search names
  Landsat assets ``s3://usgs-landsat/…``). ``file:``, any other scheme and ``/vsi…`` paths are
  refused.
- Other hosts are allowed: real catalogs keep their JSON on one host and their rasters on another
  (Earth Search's items on element84.com, its COGs on amazonaws.com; the Planetary Computer's on
  blob.core.windows.net), so a same-host rule would refuse them.
- A host that is this machine or a private network (loopback, private, link-local, unspecified,
  reserved, multicast: any address that is not global, by literal address in any spelling curl
  accepts, by ``localhost``, or by what its name resolves to) is refused when the document came
  from a public host, and allowed when the document is itself on such a host (a catalog on an
  internal network names internal rasters; the tests serve everything from 127.0.0.1).

A document the user reads from disk (a local item or catalog) is the user's own and may name local
files; this module is not asked about it. Redirects that a public server answers are followed by
GDAL and the HTTP client as they are; only the hrefs a document writes are checked.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import urllib.parse

from outcrop.errors import OutcropError

DOCUMENT_SCHEMES = ("http", "https")
ASSET_SCHEMES = ("http", "https", "s3", "gs")


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address when it is written as one, in any spelling the C library (and so
    curl, under GDAL and requests) accepts: ``127.1``, ``2130706433``, ``0x7f.0.0.1``, ``[::1]``."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        return ipaddress.ip_address(socket.inet_ntoa(socket.inet_aton(host)))
    except OSError:
        return None


def _internal_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


@functools.lru_cache(maxsize=256)
def internal_host(host: str) -> bool:
    """Whether ``host`` is this machine or a private network (see the module's policy)."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    ip = _address(host)
    if ip is not None:
        return _internal_address(ip)
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False  # no address: nothing will be reached there
    return any(_internal_address(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos)


def _host(url: str) -> str:
    try:
        return urllib.parse.urlsplit(url).hostname or ""
    except ValueError:
        return ""


def check_reachable(document: str, url: str) -> None:
    """Refuse ``url`` (already absolute) when it is internal and ``document`` is public."""
    host = _host(url)
    if host and internal_host(host) and not internal_host(_host(document)):
        raise OutcropError(
            f"{document}: links to {url}, on {host}, an address of this machine or a private "
            f"network, from a document on the public host {_host(document)}; refused"
        )


def remote_href(document: str, href: str, *, asset: bool = False) -> str:
    """``href`` of a document read from the URL ``document``, made absolute and checked.

    ``asset``: the href names a raster for GDAL (``s3://`` and ``gs://`` allowed), not a STAC
    document to fetch. Raises :class:`OutcropError` naming the document and the href.
    """
    allowed = ASSET_SCHEMES if asset else DOCUMENT_SCHEMES
    text = href.strip()
    if text.lower().startswith("/vsi"):
        raise OutcropError(
            f"{document}: href {href!r} is a GDAL path; a STAC document read over HTTP may "
            f"name only {', '.join(s + '://' for s in allowed)} URLs"
        )
    try:
        resolved = urllib.parse.urljoin(document, text)
        scheme = urllib.parse.urlsplit(resolved).scheme.lower()
    except ValueError as exc:
        raise OutcropError(f"{document}: href {href!r} is not a URL ({exc})") from None
    if scheme not in allowed:
        what = "a local file" if scheme in ("file", "") else f"a {scheme}: URL"
        raise OutcropError(
            f"{document}: href {href!r} is {what}; a STAC document read over HTTP may name "
            f"only {', '.join(s + '://' for s in allowed)} URLs"
        )
    if scheme in DOCUMENT_SCHEMES:
        check_reachable(document, resolved)
    return resolved


__all__ = ["remote_href", "check_reachable", "internal_host", "ASSET_SCHEMES", "DOCUMENT_SCHEMES"]
