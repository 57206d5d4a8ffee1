"""XMP packets: safe parsing, reading one namespace's properties, and the edits irn_batch makes.

XMP is RDF/XML, and photo tools serialise it in different but equivalent ways: properties as attributes of
``rdf:Description`` (Pillow, exiv2) or as child elements (exiftool), single or double quotes, several
descriptions, other namespaces first, an ``<?xpacket?>`` wrapper with padding. So packets are read with an
XML parser, never with patterns, and the parser is ``defusedxml``'s: a packet that declares a DTD or
entities is refused (no entity expansion, no external fetches), as is one over ``MAX_PACKET`` bytes.

Edits (``edit``) work on the parsed tree and serialise it again (prefixes of the input are kept where
they can be): orientation reset, pixel sizes updated, GPS properties removed, one namespace removed, and
simple properties of one namespace added as attributes of their own ``rdf:Description``.
"""
from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from typing import Mapping

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

MAX_PACKET = 4 * 1024 * 1024  # bytes; real packets are a few kB (with edit history, some 100 kB)

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
X = "adobe:ns:meta/"
TIFF = "http://ns.adobe.com/tiff/1.0/"
EXIF = "http://ns.adobe.com/exif/1.0/"
_KNOWN_PREFIXES = {"x": X, "rdf": RDF, "tiff": TIFF, "exif": EXIF, "xmp": "http://ns.adobe.com/xap/1.0/",
                   "dc": "http://purl.org/dc/elements/1.1/", "photoshop": "http://ns.adobe.com/photoshop/1.0/",
                   "xmpRights": "http://ns.adobe.com/xap/1.0/rights/", "xmpMM": "http://ns.adobe.com/xap/1.0/mm/"}
_DESC = f"{{{RDF}}}Description"
_ABOUT = f"{{{RDF}}}about"
_HEAD = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_TAIL = '\n<?xpacket end="w"?>'
_RESERVED = re.compile(r"ns\d+$")
_MAX_PREFIXES = 512


class XMPError(ValueError):
    """A packet that is not usable XMP (not XML, too large, or declaring a DTD/entities); one line."""


def _as_bytes(packet: bytes | str) -> bytes:
    data = packet.encode("utf-8") if isinstance(packet, str) else bytes(packet)
    return data.strip(b"\x00 \t\r\n")  # containers pad packets (WebP chunks to even sizes, in-place editors)


def _remember_prefix(prefix: str, uri: str) -> None:
    """Let serialisation reuse a packet's own prefix for a namespace ElementTree does not know yet. Never
    rebinds a known prefix or namespace (ElementTree's map is process-wide, and packets are untrusted), and
    stops after ``_MAX_PREFIXES`` (the map would otherwise grow with every new namespace seen)."""
    known = ET._namespace_map  # uri -> prefix; no public reader exists
    if (not prefix or _RESERVED.match(prefix) or prefix.lower().startswith("xml") or uri in known
            or prefix in known.values() or len(known) >= _MAX_PREFIXES):
        return
    try:
        ET.register_namespace(prefix, uri)
    except ValueError:
        pass


def parse(packet: bytes | str) -> ET.Element:
    """The root element of an XMP packet (``x:xmpmeta`` or ``rdf:RDF``). Raises XMPError for a packet over
    ``MAX_PACKET`` bytes, one with a DTD or entity declaration, or one that is not well-formed XML."""
    data = _as_bytes(packet)
    if len(data) > MAX_PACKET:
        raise XMPError(f"XMP packet of {len(data)} bytes is over the {MAX_PACKET}-byte limit")
    root = None
    try:
        for event, item in iterparse(io.BytesIO(data), events=("start-ns", "start"), forbid_dtd=True):
            if event == "start-ns":
                _remember_prefix(*item)
            elif root is None:
                root = item
    except DefusedXmlException as e:
        raise XMPError(f"XMP packet refused: it declares a DTD or entities ({type(e).__name__})") from None
    except ET.ParseError as e:
        raise XMPError(f"XMP packet is not well-formed XML ({e})") from None
    if root is None or _rdf(root) is None:
        raise XMPError("XMP packet has no rdf:RDF element")
    return root


def _rdf(root: ET.Element) -> ET.Element | None:
    return root if root.tag == f"{{{RDF}}}RDF" else root.find(f".//{{{RDF}}}RDF")


def descriptions(root: ET.Element) -> list[ET.Element]:
    """The top-level rdf:Description elements (where every tool puts the properties)."""
    return [d for d in _rdf(root) if d.tag == _DESC]


def properties(root: ET.Element, ns: str) -> dict[str, str]:
    """Simple (text) properties of namespace ``ns`` in every rdf:Description, as attributes or as child
    elements: local name -> value. Structured values (rdf:Bag/Seq/Alt) are not simple and are skipped."""
    out: dict[str, str] = {}
    prefix = f"{{{ns}}}"
    for desc in descriptions(root):
        for name, value in desc.attrib.items():
            if name.startswith(prefix):
                out[name[len(prefix):]] = value
        for child in desc:
            if child.tag.startswith(prefix) and len(child) == 0:
                out[child.tag[len(prefix):]] = (child.text or "").strip()
    return out


def _drop(desc: ET.Element, keep) -> None:
    for name in [n for n in desc.attrib if not keep(n)]:
        del desc.attrib[name]
    for child in [c for c in desc if not keep(c.tag)]:
        desc.remove(child)


def _set(desc: ET.Element, name: str, value: str) -> None:
    if name in desc.attrib:
        desc.attrib[name] = value
    for child in desc:
        if child.tag == name and len(child) == 0:
            child.text = value


def has_properties(root: ET.Element) -> bool:
    """Whether any rdf:Description has a property left (anything besides rdf:about)."""
    return any(len(d) or any(n != _ABOUT for n in d.attrib) for d in descriptions(root))


def edit(root: ET.Element, *, orientation: int | None = None, size: tuple[int, int] | None = None,
         drop_gps: bool = False, drop_ns: str | None = None) -> ET.Element:
    """Edit a parsed packet in place (and return it): ``orientation`` sets tiff:Orientation where present;
    ``size`` (width, height) sets exif:PixelX/YDimension and tiff:ImageWidth/ImageLength where present;
    ``drop_gps`` removes every exif:GPS* property; ``drop_ns`` removes that namespace's properties.
    Descriptions left without properties are removed."""
    rdf = _rdf(root)
    for desc in descriptions(root):
        if orientation is not None:
            _set(desc, f"{{{TIFF}}}Orientation", str(orientation))
        if size is not None:
            w, h = (str(v) for v in size)
            for name, value in ((f"{{{EXIF}}}PixelXDimension", w), (f"{{{EXIF}}}PixelYDimension", h),
                                (f"{{{TIFF}}}ImageWidth", w), (f"{{{TIFF}}}ImageLength", h)):
                _set(desc, name, value)
        if drop_gps:
            _drop(desc, lambda n: not n.startswith(f"{{{EXIF}}}GPS"))
        if drop_ns is not None:
            _drop(desc, lambda n: not n.startswith(f"{{{drop_ns}}}"))
        if not len(desc) and all(n == _ABOUT for n in desc.attrib):
            rdf.remove(desc)
    return root


def add(root: ET.Element, ns: str, prefix: str, values: Mapping[str, str]) -> ET.Element:
    """Add ``values`` (local name -> text) as attributes of a new rdf:Description in namespace ``ns``."""
    ET.register_namespace(prefix, ns)
    attrs = {_ABOUT: ""}
    attrs.update({f"{{{ns}}}{k}": str(v) for k, v in values.items()})
    ET.SubElement(_rdf(root), _DESC, attrs)
    return root


def new_packet() -> ET.Element:
    """An empty ``x:xmpmeta`` with its ``rdf:RDF``."""
    root = ET.Element(f"{{{X}}}xmpmeta")
    ET.SubElement(root, f"{{{RDF}}}RDF")
    return root


def serialise(root: ET.Element) -> bytes:
    """The tree as a UTF-8 packet inside an ``<?xpacket?>`` wrapper (rooted at x:xmpmeta)."""
    if root.tag != f"{{{X}}}xmpmeta":
        meta = ET.Element(f"{{{X}}}xmpmeta")
        meta.append(root)
        root = meta
    body = ET.tostring(root, encoding="unicode")
    return (_HEAD + body + _TAIL).encode("utf-8")


for _p, _u in _KNOWN_PREFIXES.items():
    ET.register_namespace(_p, _u)
