"""The gzip wrapper (server/compression.py) on small WSGI applications: when, how, what it says."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Response

from server import compression
from server.compression import Compression, accepts_gzip, compressible

PAGE = ("<p>Cercle de Ségou, commune de Markala : ménage enquêté.</p>\n" * 200).encode()
GZIP = {"Accept-Encoding": "gzip, deflate"}


def serve(
    body: Iterable[bytes] | bytes,
    *,
    content_type: str = "text/html; charset=utf-8",
    status: int = 200,
    headers: dict[str, str] | None = None,
    length: bool = True,
) -> Client:
    """Return a client of an application that answers ``body`` to every request."""

    def app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        response = Response(body, status=status, content_type=content_type, headers=headers)
        if not length:
            response.headers.pop("Content-Length", None)
        return response(environ, start_response)

    return Client(Compression(app))


def test_a_page_is_compressed_whole_with_its_exact_length():
    answer = serve(PAGE).get("/", headers=GZIP)
    assert answer.headers["Content-Encoding"] == "gzip"
    assert answer.headers["Vary"] == "Accept-Encoding"
    assert int(answer.headers["Content-Length"]) == len(answer.data) < len(PAGE) / 10
    assert gzip.decompress(answer.data) == PAGE


def test_without_gzip_in_accept_encoding_the_bytes_are_the_routes_but_vary_is_said():
    for accept in (None, "identity", "gzip;q=0", "br", "gzip;q=0, *", "deflate, gzip; q=0.0"):
        answer = serve(PAGE).get("/", headers={"Accept-Encoding": accept} if accept else {})
        assert "Content-Encoding" not in answer.headers, accept
        assert answer.data == PAGE
        assert answer.headers["Vary"] == "Accept-Encoding"


def test_accept_encoding_is_read_with_its_qualities():
    assert accepts_gzip("gzip")
    assert accepts_gzip("GZIP;q=0.5")
    assert accepts_gzip("deflate, gzip;q=1.0, br")
    assert accepts_gzip("*")
    assert accepts_gzip("x-gzip")
    assert not accepts_gzip("")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("gzip;q=zero")
    assert not accepts_gzip("*, gzip;q=0")
    assert not accepts_gzip("identity, deflate")


def test_text_types_are_compressed_and_compressed_ones_never_again():
    for kind in (
        "text/html",
        "text/csv; charset=utf-8",
        "text/xml; charset=utf-8",
        "application/json",
        "application/xml",
        "application/geo+json",
        "application/openmetrics-text+xml",
        "image/svg+xml",
        "text/css",
        "application/javascript",
    ):
        assert compressible(kind), kind
        assert (
            serve(PAGE, content_type=kind).get("/", headers=GZIP).headers.get("Content-Encoding")
            == "gzip"
        )
    for kind in (
        "application/zip",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "image/jpeg",
        "image/png",
        "audio/mp4",
        "video/mp4",
        "application/octet-stream",
        "application/pdf",
        "",
    ):
        assert not compressible(kind), kind
        answer = serve(PAGE, content_type=kind).get("/", headers=GZIP)
        assert "Content-Encoding" not in answer.headers and answer.data == PAGE
        assert "Vary" not in answer.headers


def test_tiny_bodies_go_as_they_are():
    small = b"x" * (compression.MIN_BYTES - 1)
    answer = serve(small).get("/", headers=GZIP)
    assert "Content-Encoding" not in answer.headers and answer.data == small
    assert answer.headers["Vary"] == "Accept-Encoding"
    enough = b"x" * compression.MIN_BYTES
    assert serve(enough).get("/", headers=GZIP).headers["Content-Encoding"] == "gzip"


def test_range_requests_partial_answers_and_head_are_never_compressed():
    ranged = serve(PAGE).get("/", headers={**GZIP, "Range": "bytes=0-99"})
    assert "Content-Encoding" not in ranged.headers and ranged.data == PAGE
    partial = serve(
        PAGE[:100], status=206, headers={"Content-Range": f"bytes 0-99/{len(PAGE)}"}
    ).get("/", headers=GZIP)
    assert "Content-Encoding" not in partial.headers and partial.data == PAGE[:100]
    # A 200 carrying a Content-Range is left alone too.
    odd = serve(PAGE, headers={"Content-Range": f"bytes 0-{len(PAGE) - 1}/{len(PAGE)}"})
    assert "Content-Encoding" not in odd.get("/", headers=GZIP).headers
    head = serve(PAGE).head("/", headers=GZIP)
    assert "Content-Encoding" not in head.headers
    assert head.headers["Content-Length"] == str(len(PAGE))


def test_already_encoded_no_transform_and_bodiless_statuses_are_left_alone():
    packed = gzip.compress(PAGE)
    answer = serve(packed, headers={"Content-Encoding": "gzip"}).get("/", headers=GZIP)
    assert answer.data == packed  # not twice
    kept = serve(PAGE, headers={"Cache-Control": "no-transform"}).get("/", headers=GZIP)
    assert "Content-Encoding" not in kept.headers and kept.data == PAGE
    empty = serve(b"", status=204).get("/", headers=GZIP)
    assert "Content-Encoding" not in empty.headers and empty.data == b""


def test_errors_are_compressed_like_any_text_answer():
    answer = serve(PAGE, status=404).get("/", headers=GZIP)
    assert answer.status_code == 404
    assert gzip.decompress(answer.data) == PAGE


def test_the_compressed_variant_has_a_weak_etag_and_no_byte_ranges():
    answer = serve(PAGE, headers={"ETag": '"abc"', "Accept-Ranges": "bytes"}).get("/", headers=GZIP)
    assert answer.headers["ETag"] == 'W/"abc"'
    assert "Accept-Ranges" not in answer.headers
    plain = serve(PAGE, headers={"ETag": '"abc"', "Accept-Ranges": "bytes"}).get("/")
    assert plain.headers["ETag"] == '"abc"' and plain.headers["Accept-Ranges"] == "bytes"


def test_a_304_repeats_the_tag_of_the_variant_the_client_holds():
    not_modified = serve(b"", status=304, headers={"ETag": '"abc"'})
    weak = not_modified.get("/", headers={**GZIP, "If-None-Match": 'W/"abc"'})
    assert weak.headers["ETag"] == 'W/"abc"'
    assert weak.headers["Vary"] == "Accept-Encoding"
    strong = not_modified.get("/", headers={"If-None-Match": '"abc"'})
    assert strong.headers["ETag"] == '"abc"'


def test_vary_keeps_what_the_route_named():
    answer = serve(PAGE, headers={"Vary": "Cookie"}).get("/", headers=GZIP)
    assert answer.headers["Vary"] == "Cookie, Accept-Encoding"
    once = serve(PAGE, headers={"Vary": "accept-encoding"}).get("/", headers=GZIP)
    assert once.headers.getlist("Vary") == ["accept-encoding"]


def test_other_headers_are_the_routes():
    headers = {
        "X-OpenRosa-Version": "1.0",
        "X-OpenRosa-Accept-Content-Length": "10000000",
        "Content-Disposition": 'attachment; filename="x.csv"',
        "Date": "Tue, 07 May 2024 10:00:00 GMT",
    }
    answer = serve(PAGE, content_type="text/xml", headers=headers).get("/", headers=GZIP)
    for name, value in headers.items():
        assert answer.headers[name] == value


class Rows:
    """A streamed export: chunks made on demand, counting how many were made."""

    def __init__(self, chunks: int, size: int = 64 * 1024) -> None:
        self.chunks = chunks
        self.size = size
        self.made = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for index in range(self.chunks):
            self.made += 1
            lines = bytearray()
            row = 0
            while len(lines) < self.size:
                row += 1
                number = (index * 7919 + row * 104729) % 1_000_003
                lines += f"{index},{row},uuid:{number:08x},Ségou,{number % 977}\n".encode()
            yield bytes(lines[: self.size])

    def close(self) -> None:
        self.closed = True


def test_a_stream_is_compressed_as_it_passes_and_stays_a_stream():
    rows = Rows(64)
    client = serve(rows, content_type="text/csv", length=False)
    answer = client.get("/", headers=GZIP, buffered=False)
    assert answer.headers["Content-Encoding"] == "gzip"
    assert "Content-Length" not in answer.headers
    decompressor = zlib.decompressobj(31)
    received = bytearray()
    out_chunks = 0
    early = 0
    for chunk in answer.response:
        out_chunks += 1
        received += decompressor.decompress(chunk)
        if rows.made < rows.chunks // 2:
            early = len(received)  # rows the client had before half the export was read
    answer.close()
    assert early > 0
    assert rows.closed
    received += decompressor.flush()
    assert bytes(received) == b"".join(Rows(64))
    assert out_chunks > 8  # many pieces, not one body held whole


def test_a_stream_keeps_its_memory_flat():
    # 16 MiB through the wrapper: no piece it hands on is ever more than a few chunks' worth.
    rows = Rows(256)
    answer = serve(rows, content_type="text/csv", length=False).get(
        "/", headers=GZIP, buffered=False
    )
    largest = 0
    total = 0
    for chunk in answer.response:
        largest = max(largest, len(chunk))
        total += len(chunk)
    answer.close()
    assert rows.made == 256
    assert largest <= 256 * 1024
    assert total < 16 * 1024 * 1024 / 2


def test_a_slow_stream_is_flushed_so_each_chunk_gets_through(monkeypatch):
    # FLUSH_SECONDS at 0: every input chunk leaves at once, as it would after a second of
    # silence; what arrives so far always decompresses to everything sent so far.
    monkeypatch.setattr(compression, "FLUSH_SECONDS", 0.0)
    pieces = [f"ligne {n}\n".encode() * 10 for n in range(5)]
    answer = serve(iter(pieces), content_type="text/csv", length=False).get(
        "/", headers=GZIP, buffered=False
    )
    decompressor = zlib.decompressobj(31)
    received = b""
    seen = []
    for chunk in answer.response:
        received += decompressor.decompress(chunk)
        seen.append(received)
    assert received + decompressor.flush() == b"".join(pieces)
    # After the gzip header, each piece the export yielded reached the client whole.
    for index in range(len(pieces)):
        assert b"".join(pieces[: index + 1]) in seen


def test_a_long_body_of_known_length_is_streamed_not_held():
    big = PAGE * (compression.WHOLE_BYTES // len(PAGE) + 2)
    answer = serve(big, content_type="text/csv").get("/", headers=GZIP)
    assert answer.headers["Content-Encoding"] == "gzip"
    assert "Content-Length" not in answer.headers
    assert gzip.decompress(answer.data) == big


def test_start_response_called_on_the_first_chunk_and_write_are_handled():
    def lazy(environ: dict[str, Any], start_response: Callable) -> Iterator[bytes]:
        write = start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(PAGE) + 4))]
        )
        write(b"head")
        yield PAGE

    answer = Client(Compression(lazy)).get("/", headers=GZIP)
    assert answer.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(answer.data) == b"head" + PAGE
    assert int(answer.headers["Content-Length"]) == len(answer.data)


@pytest.mark.parametrize("accept", ["gzip", None])
def test_the_application_answers_through_the_wrapper(bare_app, accept):
    client = bare_app.test_client()
    answer = client.get("/login", headers={"Accept-Encoding": accept} if accept else {})
    assert answer.status_code == 200
    assert answer.headers["Vary"].endswith("Accept-Encoding")
    html = gzip.decompress(answer.data) if accept else answer.data
    assert b"<form" in html
    assert answer.headers.get("Content-Encoding") == accept
    # The security headers are still there, around it.
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
