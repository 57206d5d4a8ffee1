"""Photo metadata (EXIF, XMP, IPTC, comment, PNG text, ICC) through LR files and restores; LR files that
photo tools rewrote; hostile XMP. Fields are compared with what Pillow and exiv2 (pyexiv2) read."""
from __future__ import annotations

import functools
import io
import xml.etree.ElementTree as ET
from html import escape

import numpy as np
import pyexiv2
import pytest
from PIL import Image, ImageCms

from irn_batch.io import photo_metadata as pm
from irn_batch.io import xmp as xmplib
from irn_batch.io.container import Encoding, encode
from irn_batch.io.lr_file import XMP_NS, LRMeta, pixels_sha256, read_lr, read_lr_meta
from irn_batch.io.lr_file import read_photo_meta, write_lr
from irn_batch.io.decode import ImageError, decode_image

pyexiv2.set_log_level(4)
GPS = {1: "N", 2: (52.0, 22.0, 30.5), 3: "E", 4: (4.0, 53.0, 12.25)}
DATE = "2024:05:06 07:08:09"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"


@functools.lru_cache(maxsize=1)
def srgb_icc() -> bytes:  # once: the profile's header records the time it was made
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def user_xmp(orientation: int = 6) -> bytes:
    """exiftool style: element form, single quotes, several namespaces, GPS and orientation in XMP too."""
    return f"""<?xpacket begin='\ufeff' id='W5M0MpCehiHzreSzNTczkc9d'?>
<x:xmpmeta xmlns:x='adobe:ns:meta/' x:xmptk='Image::ExifTool 12.76'>
<rdf:RDF xmlns:rdf='{RDF_NS}'>
 <rdf:Description rdf:about='' xmlns:xmp='http://ns.adobe.com/xap/1.0/'>
  <xmp:Rating>4</xmp:Rating>
 </rdf:Description>
 <rdf:Description rdf:about='' xmlns:dc='http://purl.org/dc/elements/1.1/'>
  <dc:subject><rdf:Bag><rdf:li>harbour</rdf:li><rdf:li>dusk</rdf:li></rdf:Bag></dc:subject>
 </rdf:Description>
 <rdf:Description rdf:about='' xmlns:exif='http://ns.adobe.com/exif/1.0/' xmlns:tiff='http://ns.adobe.com/tiff/1.0/'>
  <exif:GPSLatitude>52,22.508N</exif:GPSLatitude>
  <tiff:Orientation>{orientation}</tiff:Orientation>
 </rdf:Description>
</rdf:RDF>
</x:xmpmeta>
{' ' * 100}
<?xpacket end='w'?>""".encode()


def exif_block(orientation: int = 6, size=(48, 32)) -> bytes:
    ex = Image.Exif()
    ex[0x010F], ex[0x0110], ex[0x013B], ex[0x8298], ex[0x0112] = "Canon", "EOS R5", "Ann Artist", "(c) Ann", orientation
    sub = ex.get_ifd(0x8769)
    sub[0x9003], sub[0xA002], sub[0xA003] = DATE, size[0], size[1]
    ex.get_ifd(0x8825).update(GPS)
    return ex.tobytes()


def add_iptc(data: bytes, caption: str = "Boats at dusk") -> bytes:
    img = pyexiv2.ImageData(data)
    img.modify_iptc({"Iptc.Application2.Caption": caption, "Iptc.Application2.Keywords": ["boat", "sea"]})
    out = img.get_bytes()
    img.close()
    return out


def photo_jpeg(px: np.ndarray, orientation: int = 6) -> bytes:
    """A camera-like JPEG: EXIF (date, camera, GPS, artist, copyright, orientation), XMP, IPTC, comment, ICC."""
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="JPEG", quality=95, exif=exif_block(orientation, px.shape[1::-1]),
                             xmp=user_xmp(orientation), comment=b"shot from the pier", icc_profile=srgb_icc())
    return add_iptc(buf.getvalue())


def photo_png(px: np.ndarray) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "Harbour")
    info.add_itxt("Description", "Hafen bei Dämmerung")
    info.add_itxt(pm.PNG_XMP_KEY, user_xmp(1).decode())
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="PNG", pnginfo=info, exif=exif_block(1, px.shape[1::-1]),
                             icc_profile=srgb_icc())
    return buf.getvalue()


def fields(data: bytes) -> dict:
    """What Pillow and exiv2 read of one file, field by field (None where absent)."""
    im = Image.open(io.BytesIO(data))
    im.load()
    ex = im.getexif()
    sub, gps = ex.get_ifd(0x8769), ex.get_ifd(0x8825)
    out = {"make": ex.get(0x010F), "model": ex.get(0x0110), "artist": ex.get(0x013B), "copyright": ex.get(0x8298),
           "orientation": ex.get(0x0112), "date": sub.get(0x9003), "gps": dict(gps) or None,
           "exif_size": (sub.get(0xA002), sub.get(0xA003)), "icc": im.info.get("icc_profile") or None}
    packet = im.info.get("xmp")
    rating = keywords = xmp_gps = xmp_orient = None
    if packet:
        root = ET.fromstring(bytes(packet).strip(b"\x00 \n"))
        desc = list(root.iter(f"{{{RDF_NS}}}Description"))
        props = {}
        for d in desc:
            props.update({k.split("}")[1]: v for k, v in d.attrib.items() if "}" in k})
            props.update({c.tag.split("}")[1]: c for c in d})
        rating = props.get("Rating")
        rating = rating.text.strip() if isinstance(rating, ET.Element) else rating
        subject = props.get("subject")
        keywords = [li.text for li in subject.iter(f"{{{RDF_NS}}}li")] if subject is not None else None
        xmp_gps = "GPSLatitude" in props
        o = props.get("Orientation")
        xmp_orient = o.text.strip() if isinstance(o, ET.Element) else o
    out.update(rating=rating, keywords=keywords, xmp_gps=xmp_gps, xmp_orientation=xmp_orient)
    comment = im.info.get("comment") if im.format != "PNG" else im.text.get("Comment")
    out["comment"] = (comment.encode() if isinstance(comment, str) else bytes(comment)).rstrip(b"\x00") \
        if comment else None
    out["png_text"] = {k: v for k, v in im.text.items() if k in ("Title", "Description")} or None \
        if im.format == "PNG" else None
    caption = None
    if im.format in ("JPEG", "TIFF"):
        md = pyexiv2.ImageData(data)
        caption = md.read_iptc().get("Iptc.Application2.Caption")
        md.close()
    out["caption"] = caption
    return out


ORIGINAL = {"make": "Canon", "model": "EOS R5", "artist": "Ann Artist", "copyright": "(c) Ann", "date": DATE,
            "gps": GPS, "rating": "4", "keywords": ["harbour", "dusk"], "caption": "Boats at dusk",
            "comment": b"shot from the pier"}


def assert_carried(got: dict, kinds: set[str], size: tuple[int, int]) -> None:
    """The fields of ORIGINAL whose kind the container holds are there; orientation 1, sizes ``size``."""
    for name in ("make", "model", "artist", "copyright", "date", "gps"):
        assert got[name] == ORIGINAL[name], name
    assert got["orientation"] == 1 and got["exif_size"] == size
    assert (got["rating"], got["keywords"], got["xmp_orientation"]) == ("4", ["harbour", "dusk"], "1")
    assert got["icc"] == srgb_icc()
    assert got["caption"] == (ORIGINAL["caption"] if "iptc" in kinds else None)
    assert got["comment"] == (ORIGINAL["comment"] if "comment" in kinds else None)


def lr_meta(w: int, h: int) -> LRMeta:
    return LRMeta("m" * 8, 2, w, h, 7, False, "RGB")


@pytest.fixture(scope="module")
def px():
    from pipeline_fixtures import smooth_image

    return smooth_image(32, 48, seed=3)


def test_source_fields_as_read(px):
    meta = pm.extract(photo_jpeg(px))
    assert meta.kinds() == ["exif", "xmp", "iptc", "comment", "icc"] and meta.dropped == ()
    got = fields(photo_jpeg(px))
    assert got["orientation"] == 6 and got["gps"] == GPS and got["caption"] == ORIGINAL["caption"]
    assert pm.extract(photo_png(px)).kinds() == ["exif", "xmp", "png_text", "icc"]


@pytest.mark.parametrize("lr_container", ["png", "webp", "jpeg", "avif"])
@pytest.mark.parametrize("out_container", ["png", "jpeg", "webp", "avif", "tiff", "heif"])
def test_round_trip_through_lr_and_restore(px, lr_container, out_container):
    """Source JPEG (orientation 6) -> LR (+ sidecar for what it cannot hold) -> restored file."""
    src = photo_jpeg(px)
    hr = decode_image(src)  # upright: 32 wide, 48 high
    photo = pm.for_pixels(pm.extract(src), hr.colour)
    meta = lr_meta(hr.width, hr.height)
    lr_px = np.zeros((24, 16, 3), np.uint8) + 100
    lr = write_lr(lr_px, meta, Encoding(lr_container), photo)
    inside, sidecar = photo.split(lr_container)
    assert set(inside.kinds()) | set(sidecar.kinds()) == {"exif", "xmp", "iptc", "comment", "icc"}
    got = fields(lr)
    assert_carried(got, pm.HOLDS[lr_container], (16, 24))
    assert read_lr_meta(lr) == meta  # our fields and the user's XMP in one packet
    back = read_photo_meta(lr).filled_from(pm.PhotoMeta.from_json(sidecar.to_json()))
    assert back.kinds() == photo.kinds()
    out_photo = pm.for_image(back, hr.width, hr.height)
    out = encode(np.zeros((48, 32, 3), np.uint8) + 90, Encoding(out_container), photo=out_photo)
    got = fields(out)
    assert_carried(got, pm.HOLDS[out_container], (32, 48))
    assert decode_image(out).width == 32  # orientation 1: not rotated a second time
    xmp_out = Image.open(io.BytesIO(out)).info.get("xmp")
    assert XMP_NS.encode() not in bytes(xmp_out)  # a restore is not an LR


def test_png_text_kept_in_png_and_reported_elsewhere(px):
    src = photo_png(px)
    photo = pm.extract(src)
    assert photo.png_text == {"Title": "Harbour", "Description": "Hafen bei Dämmerung"}
    lr = write_lr(px[:16, :24], lr_meta(48, 32), Encoding("png"), photo)
    assert read_lr_meta(lr).z_seed == 7
    back = read_photo_meta(lr)
    assert back.png_text == photo.png_text  # irn_batch:* chunks are not the user's
    out = encode(px, Encoding("png"), photo=pm.for_image(back, 48, 32))
    assert fields(out)["png_text"] == photo.png_text
    inside, outside = back.split("jpeg")
    assert outside.kinds() == ["png_text"] and "png_text" not in inside.kinds()


def test_drop_gps_and_strip(px):
    photo = pm.extract(photo_jpeg(px))
    no_gps = pm.apply_setting(photo, "drop_gps")
    assert no_gps.dropped == ("gps",)
    out = encode(px, Encoding("jpeg"), photo=pm.for_image(no_gps, 48, 32))
    got = fields(out)
    assert got["gps"] is None and got["xmp_gps"] is False
    assert (got["make"], got["date"], got["rating"], got["caption"]) == ("Canon", DATE, "4", ORIGINAL["caption"])
    stripped = pm.apply_setting(photo, "strip")
    assert stripped.kinds() == [] and stripped.dropped == ("exif", "xmp", "iptc", "comment", "icc")
    got = fields(encode(px, Encoding("jpeg"), photo=stripped))
    assert (got["make"], got["rating"], got["caption"], got["comment"]) == (None, None, None, None)
    with pytest.raises(pm.MetadataError, match="metadata must be one of"):
        pm.apply_setting(photo, "some")


def test_converted_icc_profile_is_dropped(px):
    from icc_profiles import rgb_profile

    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="JPEG", icc_profile=rgb_profile())
    img = decode_image(buf.getvalue())
    assert img.colour.startswith("converted")
    photo = pm.for_pixels(pm.extract(buf.getvalue()), img.colour)
    assert photo.icc is None and photo.dropped == ("icc",)


# --- LR files rewritten by photo tools -------------------------------------------------------------------


def element_packet(meta: LRMeta, others_first: bool = True) -> str:
    """Our fields as exiftool writes them: child elements, single quotes, other namespaces around."""
    ours = "".join(f"<irnb:{k.split(':', 1)[1]}>{escape(v)}</irnb:{k.split(':', 1)[1]}>"
                   for k, v in meta.to_text().items())
    theirs = ("<rdf:Description rdf:about='' xmlns:xmp='http://ns.adobe.com/xap/1.0/'>"
              "<xmp:Rating>5</xmp:Rating></rdf:Description>")
    mine = f"<rdf:Description rdf:about='' xmlns:irnb='{XMP_NS}'>{ours}</rdf:Description>"
    body = theirs + mine if others_first else mine + theirs
    return (f"<?xpacket begin='\ufeff' id='W5M0MpCehiHzreSzNTczkc9d'?>\n<x:xmpmeta xmlns:x='adobe:ns:meta/' "
            f"x:xmptk='Image::ExifTool 12.76'><rdf:RDF xmlns:rdf='{RDF_NS}'>{body}</rdf:RDF></x:xmpmeta>\n"
            f"{' ' * 500}\n<?xpacket end='w'?>")


def retag(data: bytes, packet: str) -> bytes:
    """The file with its XMP packet replaced byte for byte, everything else untouched, as exiftool does
    (exiv2 would serialise the packet its own way): the JPEG APP1 segment or the WebP "XMP " chunk."""
    body = packet.encode("utf-8")
    if data.startswith(b"\xff\xd8"):
        sig, i = b"http://ns.adobe.com/xap/1.0/\x00", 2
        while data[i] == 0xFF and data[i + 1] != 0xDA:
            n = int.from_bytes(data[i + 2:i + 4], "big")
            if data[i + 1] == 0xE1 and data[i + 4:i + 4 + len(sig)] == sig:
                seg = b"\xff\xe1" + (2 + len(sig) + len(body)).to_bytes(2, "big") + sig + body
                return data[:i] + seg + data[i + 2 + n:]
            i += 2 + n
        raise AssertionError("no XMP segment")
    chunks, i = [], 12
    while i < len(data):
        fourcc, n = data[i:i + 4], int.from_bytes(data[i + 4:i + 8], "little")
        payload = body if fourcc == b"XMP " else data[i + 8:i + 8 + n]
        chunks.append(fourcc + len(payload).to_bytes(4, "little") + payload + b"\x00" * (len(payload) % 2))
        i += 8 + n + n % 2
    riff = b"WEBP" + b"".join(chunks)
    return b"RIFF" + len(riff).to_bytes(4, "little") + riff


@pytest.mark.parametrize("container", ["webp", "jpeg"])
@pytest.mark.parametrize("others_first", [True, False])
def test_tagged_lr_is_still_an_lr(px, container, others_first):
    meta = lr_meta(48, 32)
    lr = write_lr(px[:16, :24], meta, Encoding(container))
    tagged = retag(lr, element_packet(meta, others_first))
    assert tagged != lr and b"<irnb:z_seed>7</irnb:z_seed>" in tagged
    assert read_lr_meta(tagged) == meta
    assert pixels_sha256(read_lr(tagged)[1]) == pixels_sha256(read_lr(lr)[1])
    assert read_photo_meta(tagged).kinds() == ["xmp"]  # the user's rating, without our fields
    assert b"Rating" in read_photo_meta(tagged).xmp and XMP_NS.encode() not in read_photo_meta(tagged).xmp


@pytest.mark.parametrize("container", ["webp", "jpeg"])
def test_an_lr_rewritten_by_exiv2_is_still_an_lr(px, container):
    """exiv2 (digiKam, gThumb, pyexiv2) re-serialises the whole packet when it sets a rating."""
    meta = lr_meta(48, 32)
    lr = write_lr(px[:16, :24], meta, Encoding(container))
    img = pyexiv2.ImageData(lr)
    try:
        img.modify_xmp({"Xmp.xmp.Rating": "5", "Xmp.dc.subject": ["archive", "family"]})
        tagged = img.get_bytes()
    finally:
        img.close()
    assert tagged != lr
    assert read_lr_meta(tagged) == meta
    assert pixels_sha256(read_lr(tagged)[1]) == pixels_sha256(read_lr(lr)[1])
    user = read_photo_meta(tagged).xmp
    assert b"Rating" in user and b"family" in user and XMP_NS.encode() not in user


def test_pillow_style_and_attribute_forms(px):
    meta = lr_meta(48, 32)
    attrs = " ".join(f'irnb:{k.split(":", 1)[1]}="{escape(v)}"' for k, v in meta.to_text().items())
    packet = (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{RDF_NS}"><rdf:Description '
              f'rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:irnb="{XMP_NS}" {attrs}>'
              '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">t</rdf:li></rdf:Alt></dc:title>'
              '</rdf:Description></rdf:RDF></x:xmpmeta>').encode() + b"\x00\x00"
    assert read_lr_meta(encode(px[:16, :24], Encoding("avif"), xmp=packet)) == meta


def test_stripped_lr_is_refused_clearly(px):
    bare = encode(px[:16, :24], Encoding("webp", 80))
    with pytest.raises(ImageError, match="no XMP packet in the file"):
        read_lr_meta(bare)
    other = encode(px[:16, :24], Encoding("jpeg"), xmp=user_xmp())
    with pytest.raises(ImageError, match="no irn_batch fields"):
        read_lr_meta(other)


def test_hostile_packets_are_refused(px):
    laughs = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
              '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
              f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{RDF_NS}"><rdf:Description '
              f'rdf:about="" xmlns:irnb="{XMP_NS}"><irnb:model_id>&c;</irnb:model_id></rdf:Description>'
              '</rdf:RDF></x:xmpmeta>').encode()
    lr = encode(px[:16, :24], Encoding("webp", 80), xmp=laughs)
    with pytest.raises(ImageError, match="XMP packet is refused: .*DTD or entities"):
        read_lr_meta(lr)
    huge = user_xmp().replace(b"<?xpacket end", b" " * (xmplib.MAX_PACKET + 1) + b"<?xpacket end")
    with pytest.raises(xmplib.XMPError, match="over the"):
        xmplib.parse(huge.replace(b" " * 100, b"x" * 100))
    with pytest.raises(ImageError, match="over the .*-byte limit"):
        read_lr_meta(encode(px[:16, :24], Encoding("webp", 80), xmp=b"<a>" + b"x" * xmplib.MAX_PACKET + b"</a>"))
    # a source photo with such a packet loses that packet, never the image
    src = encode(px, Encoding("jpeg"), xmp=laughs, photo=pm.PhotoMeta(exif=exif_block(1)))
    meta = pm.extract(src)
    assert meta.xmp is None and meta.dropped == ("xmp",) and meta.exif


def test_sidecar_round_trip_and_malformed():
    meta = pm.PhotoMeta(exif=b"Exif\x00\x00x", iptc={"Iptc.Application2.Caption": "c"}, comment=b"hi",
                        png_text={"Title": "t"})
    assert pm.PhotoMeta.from_json(meta.to_json()) == meta
    for bad in (b"{", b'{"format": "other"}', b'{"format": "irn_batch-meta/1", "exif": "%%%"}',
                b'{"format": "irn_batch-meta/1", "iptc": []}'):
        with pytest.raises(pm.MetadataError, match="malformed metadata sidecar"):
            pm.PhotoMeta.from_json(bad)


def test_jpeg_lr_with_a_packet_too_long_for_app1(px):
    """A photo XMP too long for a JPEG APP1 segment goes to the sidecar; our fields still fit."""
    long_xmp = user_xmp(1).replace(b"<xmp:Rating>4", b"<xmp:Label>" + b"L" * 70000 + b"</xmp:Label><xmp:Rating>4")
    photo = pm.PhotoMeta(xmp=long_xmp, exif=exif_block(1))
    lr = write_lr(px[:16, :24], lr_meta(48, 32), Encoding("jpeg"), photo)
    assert read_lr_meta(lr).z_seed == 7
    inside, outside = photo.split("jpeg")
    assert inside.kinds() == ["exif"] and outside.kinds() == ["xmp"]
    assert read_photo_meta(lr).kinds() == ["exif"]


def test_packets_cannot_rebind_prefixes_for_later_packets(px):
    evil = (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{RDF_NS}"><rdf:Description rdf:about="" '
            'xmlns:tiff="urn:evil" tiff:Orientation="3"/></rdf:RDF></x:xmpmeta>').encode()
    xmplib.parse(evil)
    out = xmplib.serialise(xmplib.edit(xmplib.parse(user_xmp(6)), orientation=1))
    assert b"<tiff:Orientation>1</tiff:Orientation>" in out and b"urn:evil" not in out
