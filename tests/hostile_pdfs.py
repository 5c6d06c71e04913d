"""Hostile PDFs, written byte by byte: corrupt structure, lying page trees, decompression bombs.

PyMuPDF refuses to write most of these, so `pdf_file` lays out numbered objects and an xref
table by hand. `flate_bomb` makes a zlib stream that inflates to gigabytes from a few
megabytes in well under a second: one 16 MiB block of repeated bytes is compressed once,
ending on a full flush (which resets the compressor's history, so the block decodes the same
wherever it stands), and that block is repeated; the Adler-32 checksum of the whole is
computed arithmetically from the block's.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Mapping
from pathlib import Path

import pymupdf

GiB = 2**30
MiB = 2**20
_BLOCK = 16 * MiB  # decoded bytes per repeated compressed block
_ADLER_MOD = 65521


def flate_bomb(pattern: bytes, size: int) -> bytes:
    """A zlib stream (PDF FlateDecode) that inflates to `pattern` repeated to `size` bytes.

    `size` is rounded down to whole 16 MiB blocks; `pattern`'s length must divide 16 MiB.
    """
    if _BLOCK % len(pattern):
        raise ValueError(f"the pattern's length must divide {_BLOCK}")
    block = pattern * (_BLOCK // len(pattern))
    repeats = max(1, size // _BLOCK)
    compressor = zlib.compressobj(9)
    header = compressor.compress(b"")  # the 2-byte zlib header
    body = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    final_empty_block = b"\x03\x00"  # a last fixed-Huffman block holding only end-of-block
    checksum = _repeated_adler32(block, repeats)
    return header + body * repeats + final_empty_block + checksum.to_bytes(4, "big")


def _repeated_adler32(block: bytes, repeats: int) -> int:
    """Adler-32 of `block * repeats` without building it: after each block,
    a += sum(block) and b += len(block) * a_before + (the block's own b-sum)."""
    one = zlib.adler32(block)
    block_sum = (one & 0xFFFF) - 1
    block_weighted = ((one >> 16) - len(block)) % _ADLER_MOD
    a, b = 1, 0
    for _ in range(repeats):
        b = (b + len(block) * a + block_weighted) % _ADLER_MOD
        a = (a + block_sum) % _ADLER_MOD
    return (b << 16) | a


def ascii_hex(data: bytes) -> bytes:
    """`data` under ASCIIHexDecode: a filter in front of Flate that hides a bomb's ratio."""
    return data.hex().encode() + b">"


def stream(dictionary: str, data: bytes) -> bytes:
    """A stream object's body: `dictionary` (without /Length) and its data."""
    return f"<< {dictionary} /Length {len(data)} >>\nstream\n".encode() + data + b"\nendstream"


def pdf_file(path: Path, objects: Mapping[int, bytes], *, root: int = 1) -> Path:
    """Write objects (number → body) as a PDF with a correct xref table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += f"{number} 0 obj\n".encode() + objects[number] + b"\nendobj\n"
    size = max(objects) + 1
    xref = len(out)
    out += f"xref\n0 {size}\n0000000000 65535 f \n".encode()
    for number in range(1, size):
        out += (
            f"{offsets.get(number, 0):010d} 00000 {'n' if number in offsets else 'f'} \n".encode()
        )
    out += f"trailer\n<< /Size {size} /Root {root} 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path


# Every hand-made PDF below shares these numbers: 1 catalog, 2 page tree, 3 (first) page,
# 4 font (Helvetica, built into every reader: no font file), 5 the greeting's content stream.
CATALOG = b"<< /Type /Catalog /Pages 2 0 R >>"
HELVETICA = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
GREETING = "Hello from a hostile PDF."
SAYS_HELLO = f"BT /F1 12 Tf 72 720 Td ({GREETING}) Tj ET".encode()


def page(contents: str = "5 0 R", resources: str = "/Font << /F1 4 0 R >>") -> bytes:
    return (
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        f"/Resources << {resources} >> /Contents {contents} >>"
    ).encode()


def pages_tree(kids: str, count: int) -> bytes:
    return f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode()


def one_page(path: Path, **objects: bytes) -> Path:
    """The greeting on one page; keyword objects (`o3=...`, `o6=...`) replace or add."""
    base = {
        1: CATALOG,
        2: pages_tree("3 0 R", 1),
        3: page(),
        4: HELVETICA,
        5: stream("", SAYS_HELLO),
    }
    return pdf_file(path, base | {int(k[1:]): v for k, v in objects.items()})


# --- corrupt structure --------------------------------------------------------------------


def truncated(path: Path, source: Path, fraction: float) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def garbage_after_header(path: Path) -> Path:
    path.write_bytes(b"%PDF-1.7\n" + random.Random(0).randbytes(MiB))
    return path


def junk_xref_table(path: Path) -> Path:
    """A valid file whose xref table is random bytes: readers must rebuild it."""
    data = one_page(path).read_bytes()
    start, end = data.index(b"xref\n"), data.index(b"trailer")
    junk = random.Random(1).randbytes(300).replace(b"trailer", b"tr4iler")
    path.write_bytes(data[:start] + b"xref\n0 9\n" + junk + b"\n" + data[end:])
    return path


def startxref_past_the_end(path: Path) -> Path:
    data = one_page(path).read_bytes()
    path.write_bytes(re.sub(rb"startxref\n\d+", b"startxref\n999999999", data))
    return path


# --- encryption ---------------------------------------------------------------------------


def encrypted(path: Path, *, user_password: str) -> Path:
    """AES-256; with an empty user password anyone may open it (the owner password only
    restricts permissions, here all of them)."""
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), GREETING)
    doc.save(
        path,
        encryption=pymupdf.PDF_ENCRYPT_AES_256,
        user_pw=user_password,
        owner_pw="owner",
        permissions=0,
    )
    return path


# --- page trees ---------------------------------------------------------------------------


def lying_page_count(path: Path) -> Path:
    return one_page(path, o2=pages_tree("3 0 R", 2_000_000_000))


def one_page_listed_many_times(path: Path, times: int) -> Path:
    return one_page(path, o2=pages_tree(" ".join(["3 0 R"] * times), times))


def cyclic_page_tree(path: Path) -> Path:
    return one_page(path, o2=pages_tree("3 0 R 2 0 R", 2))


def many_pages(path: Path, count: int, contents: str = "5 0 R", **objects: bytes) -> Path:
    """`count` distinct page objects (numbered from 10) that all draw the same content."""
    numbers = range(10, 10 + count)
    tree = {
        1: CATALOG,
        2: pages_tree(" ".join(f"{n} 0 R" for n in numbers), count),
        4: HELVETICA,
        5: stream("", SAYS_HELLO),
    }
    pages = {n: page(contents) for n in numbers}
    return pdf_file(path, tree | pages | {int(k[1:]): v for k, v in objects.items()})


# --- decompression bombs and dense pages --------------------------------------------------


def content_bomb(path: Path, size: int) -> Path:
    """The greeting, then a content stream of `size` bytes of spaces."""
    bomb = stream("/Filter /FlateDecode", flate_bomb(b" ", size))
    return one_page(path, o3=page("[5 0 R 6 0 R]"), o6=bomb)


def font_bomb(path: Path, size: int, *, hide_behind_hex: bool = False) -> Path:
    """The greeting in an embedded TrueType font whose file inflates to `size` zero bytes."""
    data, filters = flate_bomb(b"\0", size), "/FlateDecode"
    if hide_behind_hex:
        data, filters = ascii_hex(data), "[/ASCIIHexDecode /FlateDecode]"
    return one_page(
        path,
        o4=b"<< /Type /Font /Subtype /TrueType /BaseFont /Bomb /FontDescriptor 6 0 R >>",
        o6=b"<< /Type /FontDescriptor /FontName /Bomb /Flags 32 /FontBBox [0 0 1000 1000] "
        b"/ItalicAngle 0 /Ascent 800 /Descent -200 /CapHeight 700 /StemV 80 /FontFile2 7 0 R >>",
        o7=stream(f"/Filter {filters}", data),
    )


def image_bomb(path: Path, size: int) -> Path:
    """The greeting above a 65536-pixel-wide grey image inflating to `size` bytes."""
    height = size // 65536
    image = stream(
        f"/Type /XObject /Subtype /Image /Width 65536 /Height {height} /ColorSpace "
        "/DeviceGray /BitsPerComponent 8 /Filter /FlateDecode",
        flate_bomb(b"\0", size),
    )
    draw = SAYS_HELLO + b" q 100 0 0 100 72 72 cm /Im1 Do Q"
    return one_page(
        path,
        o3=page(resources="/Font << /F1 4 0 R >> /XObject << /Im1 6 0 R >>"),
        o5=stream("", draw),
        o6=image,
    )


def text_operator_bomb(path: Path, size: int, *, in_form: bool = False, hex_: bool = False) -> Path:
    """`size` bytes of "(ab) Tj " text operators: in the page's content, or in a form
    XObject the page draws; optionally behind ASCIIHexDecode."""
    data, filters = flate_bomb(b"(ab) Tj ", size), "/FlateDecode"
    if hex_:
        data, filters = ascii_hex(data), "[/ASCIIHexDecode /FlateDecode]"
    if in_form:
        form = stream(
            "/Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << /Font << /F1 "
            f"4 0 R >> >> /Filter {filters}",
            data,
        )
        return one_page(
            path,
            o3=page(resources="/Font << /F1 4 0 R >> /XObject << /Fm1 6 0 R >>"),
            o5=stream("", SAYS_HELLO + b" /Fm1 Do"),
            o6=form,
        )
    return one_page(
        path,
        o3=page("[5 0 R 6 0 R 7 0 R 8 0 R]"),
        o6=stream("", b"BT /F1 1 Tf 0 0 Td "),
        o7=stream(f"/Filter {filters}", data),
        o8=stream("", b" ET"),
    )


def shared_content(path: Path, pages: int, size: int, *, hex_: bool = False) -> Path:
    """`pages` pages that all draw one content stream of `size` bytes of spaces."""
    data, filters = flate_bomb(b" ", size), "/FlateDecode"
    if hex_:
        data, filters = ascii_hex(data), "[/ASCIIHexDecode /FlateDecode]"
    return many_pages(path, pages, "[5 0 R 6 0 R]", o6=stream(f"/Filter {filters}", data))


def dense_page(path: Path, lines: int, chars_per_line: int) -> Path:
    """One page with `lines` text operators of `chars_per_line` characters each, in a tiny
    font so every line lands on the page."""
    line = b"(" + b"x" * chars_per_line + b") '\n"
    content = b"BT /F1 0.2 Tf 0.25 TL 10 780 Td\n" + line * lines + b"ET"
    return one_page(path, o5=stream("/Filter /FlateDecode", zlib.compress(content, 9)))
