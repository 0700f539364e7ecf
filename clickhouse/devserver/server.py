#!/usr/bin/env python3
"""The Eye's ClickHouse devserver: the real ClickHouse engine (chDB) behind ClickHouse's HTTP interface.

For development and tests only; production runs the official ClickHouse server.

The machines that build and test The Eye have no Docker and no recent ClickHouse
package. This server embeds the ClickHouse engine through chDB (PyPI `chdb-core`) and
speaks the part of ClickHouse's HTTP interface that the official Rust client
(`clickhouse` crate 0.15) uses, so the Rust code runs unchanged against it:

* `GET /ping` and `GET /` without a query answer `Ok.\\n`.
* `GET`/`POST /` with the query in the `query` URL parameter and/or the body. As in
  ClickHouse, the full query is the URL query, a newline, then the body; for
  `INSERT ... FORMAT X` the data starts right after the format name (and the newline).
  `multipart/form-data` bodies (the crate sends those when a query has `param_*`
  parameters) carry the query and the parameters as form fields.
* URL parameters: `database`, `default_format`, `param_NAME` (bound to `{NAME:Type}`
  placeholders), `query_id`, `compress`, `decompress`; every other parameter that is not a
  client/HTTP-only one is a ClickHouse setting applied to that request only.
* Request bodies: Content-Length or chunked; HTTP `Content-Encoding` gzip/deflate/lz4;
  `decompress=1` for ClickHouse's compressed-block format (CityHash128 checksums verified).
* Responses: `compress=1` for ClickHouse's compressed-block format (LZ4, with checksums);
  `Accept-Encoding` lz4 (LZ4 frame, what the crate asks for), gzip or deflate when
  `enable_http_compression` is on (the default since ClickHouse 25.10).
* Authentication as on a server whose `default` user has a password: every query needs
  the user `default` and the password the server generated into DIR/password (mode 0600)
  at its first start, sent as `X-ClickHouse-User`/`X-ClickHouse-Key` (what the crate
  sends), HTTP Basic or the `user`/`password` URL parameters; anything else gets
  ClickHouse's `516 AUTHENTICATION_FAILED` (HTTP 403). `/ping` needs none, as on a server.
* Errors as ClickHouse sends them: ClickHouse's HTTP status for the code,
  `X-ClickHouse-Exception-Code`, body `Code: N. DB::Exception: ... (NAME) (version ...)`.
  That includes every failure of an insert: the data of `INSERT ... FORMAT X` is spooled to
  a file and run as `INSERT ... FROM INFILE`, an ordinary query that raises whatever the
  engine raises. (chDB's streaming insert, `send_insert`, is not used: it swallows errors
  raised while writing parts, such as TOO_MANY_PARTS, and reports rows it never stored.)

All requests share one chDB session, so engine work is serialised with one lock; request
bodies are read (and decompressed) before the lock is taken, so a slow client never
holds up the others. Per-request settings are applied with `SET` and restored after
the request (an INSERT's go in its own `SETTINGS` clause instead), and the current
database is switched only when it changes.

Usage: server.py --host H --port P --data DIR [--exit-with-parent [--parent-pid PID]]

DIR (made 0700) holds the engine's data (DIR/chdb, persists across restarts), spooled
INSERT data (DIR/tmp) and the password (DIR/password, 0600, kept across restarts). SIGTERM/SIGINT stop accepting connections, let in-flight requests
finish, close the engine so everything is on disk, and exit 0.
"""

import argparse
import base64
import bz2
import fcntl
import hmac
import json
import logging
import lzma
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from urllib.parse import parse_qsl, urlsplit

import lz4.block
import lz4.frame
from chdb import session as chdb_session
from clickhouse_cityhash.cityhash import CityHash128

log = logging.getLogger("devserver")

# Idle keep-alive connections are closed after this many seconds. It must exceed the
# crate's pool idle timeout (2 s), or the client could reuse a connection we just closed.
KEEP_ALIVE_TIMEOUT = 10.0
# ClickHouse's default http_receive_timeout: the longest wait for the next piece of a
# request that has started.
RECEIVE_TIMEOUT = 30.0
# ClickHouse's default http_max_uri_size: the crate sends INSERT queries in the URL.
MAX_REQUEST_LINE = 1 << 20
# Pieces in which request bodies are read.
IO_PIECE = 1 << 20
# ClickHouse's compressed-block format (CompressedReadBuffer / CompressedWriteBuffer).
BLOCK_CHECKSUM_SIZE = 16
BLOCK_HEADER_SIZE = 9  # method byte, u32 compressed size (incl. header), u32 raw size
METHOD_NONE = 0x02
METHOD_LZ4 = 0x82
METHOD_ZSTD = 0x90
MAX_COMPRESSED_BLOCK = 1 << 30  # ClickHouse rejects bigger blocks as corrupted data
RESPONSE_BLOCK_SIZE = 1 << 20  # ClickHouse compresses responses in 1 MiB blocks

# URL parameters the HTTP layer consumes itself; everything else is a setting
# (ClickHouse's HTTPHandler has the same list, plus `query` and `param_*`).
RESERVED_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "compress",
        "decompress",
        "user",
        "password",
        "quota_key",
        "query_id",
        "stacktrace",
        "role",
        "buffer_size",
        "wait_end_of_query",
        "session_id",
        "session_timeout",
        "session_check",
        "client_protocol_version",
        "close_session",
    }
)
# Settings that only steer the HTTP layer: read here, never sent to the engine (saves
# two SET round trips per request).
HTTP_ONLY_SETTINGS = frozenset(
    {
        "enable_http_compression",
        "http_zlib_compression_level",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "http_wait_end_of_query",
        "http_response_buffer_size",
        "http_native_compression_disable_checksumming_on_decompress",
        "add_http_cors_header",
        "cancel_http_readonly_queries_on_client_close",
        "http_write_exception_in_output_format",
        "http_response_headers",
    }
)
# Settings that must not be applied to the shared session: `readonly` cannot be reset
# once it is on, which would make every later request read-only.
IGNORED_SETTINGS = frozenset({"readonly"})
SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Statements after which the session's current database is known to be unchanged.
# After anything else (USE, DROP DATABASE, ...) the next request switches explicitly.
DB_PRESERVING_KINDS = frozenset(
    {"SELECT", "WITH", "INSERT", "DESCRIBE", "DESC", "SHOW", "EXISTS", "EXPLAIN", "(", "CHECK", "OPTIMIZE"}
)
# Formats chDB's Python wrapper post-processes into Python objects; not ClickHouse formats.
PYTHON_ONLY_FORMATS = frozenset({"dataframe", "datastore", "arrowtable", "debug"})


# --------------------------------------------------------------------------- errors


class ClickHouseError(Exception):
    """An error to report the way ClickHouse does: code, name and message."""

    def __init__(self, code, name, message):
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message
        self.preformatted = False  # True: `message` is already ClickHouse's full text

    @classmethod
    def from_engine(cls, exc):
        """Wraps an exception raised by chDB, whose text is ClickHouse's `Code: N. DB::Exception: ...`."""
        text = str(exc)
        # Some chDB calls prefix the text ("Streaming insert finish failed: Code: ...").
        start = text.find("Code: ")
        if start > 0:
            text = text[start:]
        match = re.match(r"Code: (\d+)\. ", text)
        if not match:
            return cls(1001, "STD_EXCEPTION", text)
        names = re.findall(r"\(([A-Z][A-Z0-9_]+)\)", text)
        err = cls(int(match.group(1)), names[-1] if names else "", text)
        err.preformatted = True
        return err

    def body(self, version):
        """The response body, exactly like ClickHouse's (one line, version suffix)."""
        if self.preformatted:
            text = self.message.rstrip()
        else:
            text = f"Code: {self.code}. DB::Exception: {self.message}. ({self.name})"
        if not re.search(r"\(version [^()]*(\([^()]*\))?\)$", text):
            text += f" (version {version} (official build))"
        return (text + "\n").encode("utf-8", "replace")

    def http_status(self):
        return EXCEPTION_STATUS.get(self.name, 500)


class BodyFramingError(Exception):
    """The request body cannot be read to its end; the connection must be closed."""


# ClickHouse's exceptionCodeToHTTPStatus (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp).
EXCEPTION_STATUS = {
    "REQUIRED_PASSWORD": 401,
    **dict.fromkeys(
        ["UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"], 403
    ),
    **dict.fromkeys(
        [
            "BAD_ARGUMENTS",
            "CANNOT_COMPILE_REGEXP",
            "CANNOT_PARSE_TEXT",
            "CANNOT_PARSE_ESCAPE_SEQUENCE",
            "CANNOT_PARSE_QUOTED_STRING",
            "CANNOT_PARSE_DATE",
            "CANNOT_PARSE_DATETIME",
            "CANNOT_PARSE_NUMBER",
            "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
            "CANNOT_PARSE_IPV4",
            "CANNOT_PARSE_IPV6",
            "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
            "CANNOT_PARSE_UUID",
            "DUPLICATE_COLUMN",
            "ILLEGAL_COLUMN",
            "UNKNOWN_ELEMENT_IN_AST",
            "UNKNOWN_TYPE_OF_AST_NODE",
            "THERE_IS_NO_COLUMN",
            "TOO_DEEP_AST",
            "TOO_BIG_AST",
            "UNEXPECTED_AST_STRUCTURE",
            "SYNTAX_ERROR",
            "INCORRECT_DATA",
            "TYPE_MISMATCH",
            "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
        ],
        400,
    ),
    **dict.fromkeys(
        [
            "UNKNOWN_TABLE",
            "UNKNOWN_FUNCTION",
            "UNKNOWN_IDENTIFIER",
            "UNKNOWN_TYPE",
            "UNKNOWN_STORAGE",
            "UNKNOWN_DATABASE",
            "UNKNOWN_SETTING",
            "UNKNOWN_DIRECTION_OF_SORTING",
            "UNKNOWN_AGGREGATE_FUNCTION",
            "UNKNOWN_FORMAT",
            "UNKNOWN_DATABASE_ENGINE",
            "UNKNOWN_TYPE_OF_QUERY",
            "UNKNOWN_ROLE",
        ],
        404,
    ),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "SOCKET_TIMEOUT": 503,
    "CANNOT_OPEN_FILE": 503,
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
    "CANNOT_SCHEDULE_TASK": 503,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}


# --------------------------------------------------------------------------- SQL scanning

# One token of ClickHouse SQL. Only what is needed to find statement boundaries, the
# statement kind and FORMAT clauses without being fooled by literals and comments.
_TOKEN = re.compile(
    rb"""
      (?P<ws>[ \t\n\r\f\v]+)
    | (?P<comment>--[^\n]*|\#[^\n]*|/\*.*?\*/)
    | (?P<str>'(?:[^'\\]|\\.|'')*')
    | (?P<qid>`(?:[^`\\]|\\.|``)*`|"(?:[^"\\]|\\.|"")*")
    | (?P<word>[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*)
    | (?P<num>[0-9][0-9A-Za-z_.]*)
    | (?P<punct>.)
    """,
    re.X | re.S,
)


def _tokens(buf, pos=0):
    """Yields (kind, start, end) for the significant tokens of `buf` from `pos`."""
    n = len(buf)
    while pos < n:
        m = _TOKEN.match(buf, pos)
        kind = m.lastgroup
        pos = m.end()
        if kind not in ("ws", "comment"):
            yield kind, m.start(), pos


class Statement:
    """What the HTTP layer needs to know about a query."""

    empty = True  # nothing but whitespace and comments
    kind = ""  # first keyword (or punctuation), upper case
    # INSERT ... FORMAT X whose data follows the format name:
    insert_sql = None  # the statement up to (without) FORMAT
    # insert_sql split at its SETTINGS clause, where `FROM INFILE` has to go in between:
    insert_target = None  # `INSERT INTO t (cols)`
    insert_settings = ""  # `SETTINGS ...` or empty
    insert_format = None
    data_offset = None  # where the data starts in the scanned buffer
    output_format = None  # a non-INSERT statement's explicit FORMAT
    second_statement_at = None  # offset of a second statement (not allowed over HTTP)


def scan_statement(buf):
    """Scans ClickHouse SQL in `buf` (bytes). Stops at the data of an INSERT."""
    st = Statement()
    toks = _tokens(buf)
    first = next(toks, None)
    if first is None:
        return st
    st.empty = False
    kind, start, end = first
    st.kind = buf[start:end].upper().decode("ascii", "replace") if kind in ("word", "punct") else ""
    if st.kind == "INSERT":
        _scan_insert(buf, toks, st)
        return st
    depth = 1 if st.kind == "(" else 0  # `(SELECT ...) UNION ...`: the first token opened one
    prev_was_format = False
    # `FORMAT name` counts if nothing or only `;` / `SETTINGS ...` follows the name, so
    # that a column called `format` (`SELECT format FROM t`) is not taken for the clause.
    candidate = None
    after_semicolon = False
    for kind, start, end in toks:
        if after_semicolon:
            st.second_statement_at = start
            break
        word = buf[start:end]
        if candidate is not None:
            if word == b";" or word.upper() == b"SETTINGS":
                st.output_format = candidate
            candidate = None
        if kind == "punct":
            if word in b"([{":
                depth += 1
            elif word in b")]}":
                depth -= 1
            elif word == b";" and depth <= 0:
                after_semicolon = True
        elif kind in ("word", "qid") and depth == 0 and prev_was_format:
            candidate = _unquote_name(word)
        prev_was_format = kind == "word" and depth == 0 and word.upper() == b"FORMAT"
    if candidate is not None:
        st.output_format = candidate
    return st


def _scan_insert(buf, toks, st):
    """Finds `FORMAT name` of an INSERT and where its data starts.

    Leaves `st.insert_format` unset for INSERT ... VALUES / SELECT / FROM INFILE, which
    the engine runs as plain queries.
    """
    tok = next(toks, None)
    if tok is None or buf[tok[1] : tok[2]].upper() != b"INTO":
        return
    tok = next(toks, None)
    if tok is not None and buf[tok[1] : tok[2]].upper() in (b"TABLE", b"FUNCTION"):
        tok = next(toks, None)
    # Skip the table name (`db.t`, `t`) or function name, so a table called `format`
    # is not mistaken for the clause.
    if tok is None:
        return
    tok = next(toks, None)
    if tok is not None and buf[tok[1] : tok[2]] == b".":
        next(toks, None)
        tok = next(toks, None)
    depth = 0
    settings_at = None
    while tok is not None:
        kind, start, end = tok
        word = buf[start:end]
        if kind == "punct":
            if word in b"([{":
                depth += 1
            elif word in b")]}":
                depth -= 1
            elif word == b";" and depth <= 0:
                return
        elif kind == "word" and depth == 0:
            upper = word.upper()
            if upper in (b"VALUES", b"SELECT", b"WITH", b"FROM"):
                return
            if upper == b"SETTINGS" and settings_at is None:
                settings_at = start
            if upper == b"FORMAT":
                name = next(toks, None)
                if name is None or name[0] not in ("word", "qid"):
                    return
                st.insert_sql = buf[:start].decode("utf-8", "replace").strip()
                split = start if settings_at is None else settings_at
                st.insert_target = buf[:split].decode("utf-8", "replace").strip()
                st.insert_settings = buf[split:start].decode("utf-8", "replace").strip()
                st.insert_format = _unquote_name(buf[name[1] : name[2]])
                st.data_offset = _data_start(buf, name[2])
                return
        tok = next(toks, None)


def _data_start(buf, pos):
    """Where INSERT data starts after the format name, as ClickHouse's ParserInsertQuery
    decides: after spaces and tabs, and after one line break if there is one."""
    n = len(buf)
    while pos < n and buf[pos] in b" \t\f":
        pos += 1
    if pos < n and buf[pos] == 0x0D:  # \r
        pos += 1
    if pos < n and buf[pos] == 0x0A:  # \n
        pos += 1
    return pos


def _unquote_name(word):
    text = word.decode("utf-8", "replace")
    if len(text) >= 2 and text[0] in "`\"" and text[-1] == text[0]:
        text = text[1:-1]
    return text


def quote_ident(name):
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_str(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --------------------------------------------------------------------------- compression


def block_checksum(data):
    """ClickHouse's checksum of a compressed block: CityHash128 (v1.0.2) of method byte,
    sizes and payload, stored as the hash's high 64 bits then its low 64 bits, each LE."""
    h = CityHash128(data)
    return struct.pack("<QQ", h >> 64, h & 0xFFFFFFFFFFFFFFFF)


def compress_blocks(data):
    """Encodes `data` in ClickHouse's compressed-block format with LZ4 (compress=1)."""
    out = []
    view = memoryview(data)
    for off in range(0, len(view), RESPONSE_BLOCK_SIZE):
        raw = view[off : off + RESPONSE_BLOCK_SIZE]
        payload = lz4.block.compress(raw, store_size=False)
        header = struct.pack("<BII", METHOD_LZ4, BLOCK_HEADER_SIZE + len(payload), len(raw))
        out.append(block_checksum(header + payload))
        out.append(header)
        out.append(payload)
    return b"".join(out)


class BlockDecoder:
    """Decodes a request body in ClickHouse's compressed-block format (decompress=1),
    verifying each block's checksum as ClickHouse does."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        """Returns the decompressed contents of the blocks completed by `data`."""
        buf = self.buf
        buf += data
        out = []
        pos = 0
        meta = BLOCK_CHECKSUM_SIZE + BLOCK_HEADER_SIZE
        while len(buf) - pos >= meta:
            method, size_compressed, size_raw = struct.unpack_from("<BII", buf, pos + BLOCK_CHECKSUM_SIZE)
            if size_compressed < BLOCK_HEADER_SIZE or size_compressed > MAX_COMPRESSED_BLOCK:
                raise ClickHouseError(
                    39,
                    "TOO_LARGE_SIZE_COMPRESSED",
                    f"Too large size_compressed_without_checksum: {size_compressed}. Most likely corrupted data",
                )
            end = pos + BLOCK_CHECKSUM_SIZE + size_compressed
            if len(buf) < end:
                break
            # A copy (memcpy-fast) rather than a memoryview: `buf` is resized below, which
            # an exported view would forbid.
            block = bytes(buf[pos + BLOCK_CHECKSUM_SIZE : end])
            expected = bytes(buf[pos : pos + BLOCK_CHECKSUM_SIZE])
            actual = block_checksum(block)
            if actual != expected:
                raise ClickHouseError(
                    40,
                    "CHECKSUM_DOESNT_MATCH",
                    "Checksum doesn't match: corrupted data. Reference: "
                    f"{_checksum_hex(expected)}. Actual: {_checksum_hex(actual)}. "
                    f"Size of compressed block: {size_compressed}",
                )
            payload = memoryview(block)[BLOCK_HEADER_SIZE:]
            if method == METHOD_LZ4:
                try:
                    out.append(lz4.block.decompress(payload, uncompressed_size=size_raw))
                except lz4.block.LZ4BlockError as exc:
                    raise ClickHouseError(271, "CANNOT_DECOMPRESS", f"Cannot decompress LZ4-encoded data: {exc}")
            elif method == METHOD_NONE:
                out.append(bytes(payload))
            elif method == METHOD_ZSTD:
                raise ClickHouseError(
                    89, "UNKNOWN_COMPRESSION_METHOD", "ZSTD-compressed blocks are not supported by the devserver"
                )
            else:
                raise ClickHouseError(89, "UNKNOWN_COMPRESSION_METHOD", f"Unknown compression method. Code: {method}")
            pos = end
        del buf[:pos]
        return out

    def finish(self):
        if self.buf:
            raise ClickHouseError(
                33,
                "CANNOT_READ_ALL_DATA",
                f"Cannot read all data: the request body ends inside a compressed block ({len(self.buf)} bytes left)",
            )


def _checksum_hex(checksum):
    hi, lo = struct.unpack("<QQ", checksum)
    return f"0x{hi:016x}{lo:016x}"


class _Lz4FrameStream:
    """Incremental LZ4 frame decoding that also accepts concatenated frames."""

    def __init__(self):
        self.d = lz4.frame.LZ4FrameDecompressor()

    def decompress(self, data):
        out = [self.d.decompress(data)]
        while self.d.eof and self.d.unused_data:
            rest = self.d.unused_data
            self.d = lz4.frame.LZ4FrameDecompressor()
            out.append(self.d.decompress(rest))
        return b"".join(out)


def content_decoder(encoding):
    """A streaming decoder for a request's Content-Encoding (None for identity)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity", "none"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)
    if encoding == "lz4":
        return _Lz4FrameStream()
    if encoding == "xz":
        return lzma.LZMADecompressor()
    if encoding == "bz2":
        return bz2.BZ2Decompressor()
    raise ClickHouseError(89, "UNKNOWN_COMPRESSION_METHOD", f"Unknown HTTP compression method: {encoding}")


def choose_response_encoding(accept_encoding):
    """Picks a Content-Encoding for the response from Accept-Encoding, like ClickHouse's
    preference order for the methods supported here."""
    offered = {part.split(";")[0].strip().lower() for part in accept_encoding.split(",")}
    for encoding in ("lz4", "gzip", "deflate"):
        if encoding in offered:
            return encoding
    return None


def encode_response(body, encoding, level):
    if encoding == "lz4":
        return lz4.frame.compress(body)
    if encoding == "gzip":
        c = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return c.compress(body) + c.flush()
    if encoding == "deflate":
        return zlib.compress(body, level)
    return body


# --------------------------------------------------------------------------- request bodies


class RequestBody:
    """Reads one request body off the connection: Content-Length or chunked."""

    def __init__(self, handler):
        self.rfile = handler.rfile
        headers = handler.headers
        self.chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        length = headers.get("Content-Length")
        self.remaining = 0
        if not self.chunked and length is not None:
            try:
                self.remaining = int(length)
            except ValueError:
                raise BodyFramingError(f"bad Content-Length {length!r}")
            if self.remaining < 0:
                raise BodyFramingError(f"bad Content-Length {length!r}")
        # A POST must say how long its body is (ClickHouse answers 411 too).
        self.length_missing = handler.command == "POST" and not self.chunked and length is None
        self.done = not self.chunked and self.remaining == 0
        self.empty = self.done  # known to have no body at all
        # One reader for the whole body: whoever stops early (an error in the middle of
        # an INSERT), drain() goes on from the same place.
        self._reader = None

    def pieces(self):
        """The raw body in pieces (always the same iterator); fully read when it ends."""
        if self._reader is None:
            self._reader = self._read()
        return self._reader

    def _read(self):
        try:
            if self.chunked:
                yield from self._chunked_pieces()
            else:
                while self.remaining > 0:
                    piece = self.rfile.read(min(IO_PIECE, self.remaining))
                    if not piece:
                        raise BodyFramingError("connection closed inside the request body")
                    self.remaining -= len(piece)
                    yield piece
        except OSError as exc:  # timeouts and resets: the connection is unusable
            raise BodyFramingError(f"reading the request body failed: {exc!r}") from None
        self.done = True

    def _chunked_pieces(self):
        rfile = self.rfile
        while True:
            line = rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise BodyFramingError("bad chunk size line")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BodyFramingError(f"bad chunk size line {line[:40]!r}")
            if size == 0:
                # Trailer fields, if any, up to the empty line.
                while True:
                    trailer = rfile.readline(65536)
                    if trailer in (b"\r\n", b"\n"):
                        return
                    if not trailer:
                        raise BodyFramingError("connection closed inside the chunked trailer")
            while size > 0:
                piece = rfile.read(min(size, IO_PIECE))
                if not piece:
                    raise BodyFramingError("connection closed inside a chunk")
                size -= len(piece)
                yield piece
            if rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BodyFramingError("chunk not followed by CRLF")

    def drain(self):
        """Reads and discards what is left, so the connection can serve the next request."""
        if not self.done:
            for _ in self.pieces():
                pass


def decoded_pieces(raw_pieces, content_encoding, decompress):
    """Applies the request's Content-Encoding, then ClickHouse block decompression
    (the order ClickHouse applies them in)."""
    decoder = content_decoder(content_encoding)
    blocks = BlockDecoder() if decompress else None
    for piece in raw_pieces:
        if decoder is not None:
            try:
                piece = decoder.decompress(piece)
            except (zlib.error, lzma.LZMAError, OSError, RuntimeError) as exc:
                raise ClickHouseError(271, "CANNOT_DECOMPRESS", f"Cannot decompress the request body ({content_encoding}): {exc}")
            if not piece:
                continue
        if blocks is not None:
            yield from blocks.feed(piece)
        else:
            yield piece
    if blocks is not None:
        blocks.finish()


class Spool:
    """Holds an INSERT's data in a file under the server's temp dir until the engine reads
    it (`INSERT ... FROM INFILE`). The file's path is per thread (a thread serves one
    request at a time), so the same path is reused and no unique names are needed."""

    def __init__(self, tmp_dir):
        self.size = 0
        self.path = os.path.join(tmp_dir, f"body-{threading.get_ident()}.bin")
        self.file = open(self.path, "wb")

    def add(self, data):
        if data:
            self.size += len(data)
            self.file.write(data)

    def finish(self):
        """Makes everything written visible to the engine (which reads the file by path)."""
        self.file.close()

    def close(self):
        self.file.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def parse_multipart(body, content_type):
    """Parses a multipart/form-data body into {field name: value} (ClickHouse reads
    `query`, `param_*` and settings from such forms; the crate sends its parameters so)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ClickHouseError(36, "BAD_ARGUMENTS", "multipart/form-data request without a boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    fields = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        part = part[2:] if part.startswith(b"\r\n") else part.lstrip(b"\n")
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep:
            raise ClickHouseError(36, "BAD_ARGUMENTS", "malformed multipart/form-data part")
        if value.endswith(b"\r\n"):
            value = value[:-2]
        disposition = re.search(rb'(?im)^content-disposition:.*?\bname="([^"]*)"', head)
        if not disposition:
            continue
        if re.search(rb'(?im)^content-disposition:.*?\bfilename=', head):
            raise ClickHouseError(
                48, "NOT_IMPLEMENTED", "external tables (multipart file parts) are not supported by the devserver"
            )
        fields[disposition.group(1).decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return fields


# --------------------------------------------------------------------------- the engine


class Engine:
    """The one chDB session and everything that must happen under its lock."""

    def __init__(self, path):
        self.session = chdb_session.Session(path)
        self.lock = threading.Lock()
        self.current_db = None  # None: unknown, switch before the next request
        self.version = self._scalar("SELECT version()")
        self.timezone = self._scalar("SELECT timezone()")
        self.http_compression_default = self._scalar("SELECT getSetting('enable_http_compression')") in ("1", "true")
        # chDB changes a few settings at start-up; restoring means going back to these.
        self.baseline = self._changed_settings()

    def close(self):
        with self.lock:
            self.session.close()

    def _raw(self, sql, fmt="TabSeparated", params=None):
        try:
            return self.session.query(sql, fmt, params=params)
        except RuntimeError as exc:  # chdb.ChdbError is a RuntimeError
            raise ClickHouseError.from_engine(exc) from None

    def _scalar(self, sql):
        return self._raw(sql, "TabSeparatedRaw").bytes().decode().strip()

    def _changed_settings(self):
        out = self._raw("SELECT name, value FROM system.settings WHERE changed", "JSONEachRow").bytes()
        rows = (json.loads(line) for line in out.splitlines() if line)
        return {row["name"]: row["value"] for row in rows if row["name"] != "database"}

    def _use(self, database):
        if database != self.current_db:
            self.current_db = None
            self._raw("USE " + quote_ident(database))
            self.current_db = database

    def _apply(self, settings):
        """SETs the request's settings; returns what to restore afterwards."""
        if not settings:
            return ()
        try:
            self._raw("SET " + ", ".join(f"{k} = {quote_str(v)}" for k, v in settings.items()))
        except ClickHouseError:
            self._cleanup((), everything=True)  # a failed SET may have applied some of its settings
            raise
        return tuple(settings)

    def _restore(self, names):
        if not names:
            return
        parts = [f"{n} = {quote_str(self.baseline[n])}" if n in self.baseline else f"{n} = DEFAULT" for n in names]
        try:
            self._raw("SET " + ", ".join(parts))
        except ClickHouseError as exc:
            log.warning("restoring settings failed (%s); restoring all", exc.message)
            self._restore_all()

    def _restore_all(self):
        """Brings every setting back to its start-up value (after SET statements and failures)."""
        changed = self._changed_settings()
        parts = []
        for name, value in changed.items():
            if name not in self.baseline:
                parts.append(f"{name} = DEFAULT")
            elif value != self.baseline[name]:
                parts.append(f"{name} = {quote_str(self.baseline[name])}")
        for name, value in self.baseline.items():
            if name not in changed:
                parts.append(f"{name} = {quote_str(value)}")
        if parts:
            self._raw("SET " + ", ".join(parts))

    def query(self, sql, fmt, params, settings, database, kind):
        """Runs one statement; returns (output bytes, summary)."""
        with self.lock:
            self._use(database)
            applied = self._apply(settings)
            try:
                result = self._raw(sql, fmt, params)
                return result.bytes(), {
                    # What the engine read from storage, as a server reports it (chDB's
                    # `rows_read` counts the result's rows instead).
                    "read_rows": result.storage_rows_read(),
                    "read_bytes": result.storage_bytes_read(),
                    "written_rows": result.rows_written(),
                    "written_bytes": result.bytes_written(),
                    "elapsed_ns": int(result.elapsed() * 1e9),
                }
            finally:
                if kind not in DB_PRESERVING_KINDS:
                    self.current_db = None
                # Over HTTP without a session a SET statement lasts for its request only.
                self._cleanup(applied, everything=kind == "SET")

    def insert(self, st, spool, settings, database):
        """Runs `INSERT ... FORMAT X` on the data spooled in `spool`; returns the summary.

        The data goes in as `INSERT ... FROM INFILE`, an ordinary query, so every error
        (parsing, constraints, TOO_MANY_PARTS while writing parts, ...) is raised, and the
        request's settings apply as to any query.
        """
        clause = st.insert_settings
        if settings and not clause:
            # The request's settings go in the statement's own SETTINGS clause, which applies
            # them to this query only: one engine call per insert instead of three (SET,
            # INSERT, SET back), each with the engine's fixed cost per query.
            # With a clause of its own the statement's settings must win over the URL's, as
            # in ClickHouse, so the URL's are SET around it as for any other query.
            clause = "SETTINGS " + ", ".join(f"{k} = {quote_str(v)}" for k, v in settings.items())
            settings = {}
        sql = " ".join(
            part
            for part in (
                st.insert_target,
                f"FROM INFILE {quote_str(spool.path)} COMPRESSION 'none'",
                clause,
                f"FORMAT {quote_ident(st.insert_format)}",
            )
            if part
        )
        try:
            _, summary = self.query(sql, "TabSeparated", None, settings, database, "INSERT")
        except ClickHouseError as err:
            raise _unwrap_infile_error(err, spool.path) from None
        return summary

    def _cleanup(self, applied, everything=False):
        """Restores settings after a request; never raises (the request's own outcome wins)."""
        try:
            if everything:
                self._restore_all()
            else:
                self._restore(applied)
        except ClickHouseError as exc:
            log.error("cannot restore settings after a request: %s", exc.message)


def _unwrap_infile_error(err, path):
    """Gives an error of `INSERT ... FROM INFILE` the text a server gives for the same data
    in a request body: the engine wraps errors raised while reading the file in a second
    `Code: N. DB::Exception: ...` and mentions the spool file."""
    if not err.preformatted:
        return err
    text = err.message
    match = re.match(
        r"Code: (\d+)\. DB::Exception: (Code: \1\. DB::Exception: .*\(version [^()]*(?:\([^()]*\))?\))\. \([A-Z0-9_]+\)\s*\Z",
        text,
        re.S,
    )
    if match:
        text = match.group(2)
    for noise in (f": (in file/uri {path})", ": While executing File: data for INSERT was parsed from file"):
        text = text.replace(noise, "")
    if text == err.message:
        return err
    unwrapped = ClickHouseError(err.code, err.name, text)
    unwrapped.preformatted = True
    return unwrapped


# --------------------------------------------------------------------------- HTTP


def content_type_for(fmt):
    lower = fmt.lower()
    if lower.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if lower.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    if lower.startswith("json") or lower == "ndjson":
        return "application/json; charset=UTF-8"
    if lower.startswith(("rowbinary", "native", "parquet", "arrow", "orc", "avro", "msgpack", "protobuf", "capnproto")):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


# --------------------------------------------------------------------------- authentication

# The file in the data directory that holds the password of the user `default`.
PASSWORD_FILE = "password"
# The only user there is, as on a fresh server.
USER = "default"


def ensure_password(data_dir):
    """The password in DIR/password, generated (random, URL-safe) at the first start.

    Any local user could otherwise write to the development ClickHouse, e.g. insert an
    organisation admin key's row (issue 28). The file is made 0600 whatever its mode was;
    one that is empty is replaced. Written to a temporary file and renamed, so a reader
    never sees half of it.
    """
    path = os.path.join(data_dir, PASSWORD_FILE)
    try:
        with open(path, encoding="ascii") as existing:
            password = existing.read().strip()
        os.chmod(path, 0o600)
        if password:
            return password
    except FileNotFoundError:
        pass
    password = secrets.token_urlsafe(24)
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file left by a crash
        os.write(fd, (password + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, path)
    return password


def credentials(headers, params):
    """(user, password) as ClickHouse's HTTP handler reads them: `X-ClickHouse-User` and
    `X-ClickHouse-Key`, else HTTP Basic, else the `user` and `password` URL parameters;
    the user defaults to `default` and the password to empty."""
    user = headers.get("X-ClickHouse-User")
    key = headers.get("X-ClickHouse-Key")
    if user is not None or key is not None:
        return user or USER, key or ""
    authorization = headers.get("Authorization", "")
    if authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            decoded = ""
        user, _, password = decoded.partition(":")
        return user or USER, password
    return params.get("user") or USER, params.get("password", "")


def authenticate(expected, headers, params):
    """Raises ClickHouse's AUTHENTICATION_FAILED unless the request carries the user
    `default` and the expected password (compared in constant time)."""
    user, password = credentials(headers, params)
    if user == USER and hmac.compare_digest(password.encode("utf-8"), expected.encode("utf-8")):
        return
    raise ClickHouseError(
        516,
        "AUTHENTICATION_FAILED",
        f"{user}: Authentication failed: password is incorrect, or there is no user with such name",
    )


NO_HANDLER_TEXT = (
    "There is no handle {path}\n\nUse / or /ping for health checks.\n"
    "Or /replicas_status for more sophisticated health checks.\n\n"
    "Send queries from your program with POST method or GET /?query=...\n\n"
    "This is The Eye's ClickHouse devserver (chDB): it serves / and /ping only.\n"
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse-devserver"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body go out at once, no 40 ms stalls

    # -- connection loop -----------------------------------------------------------

    def handle(self):
        self.busy = False
        self.server.track(self, True)
        try:
            super().handle()
        finally:
            self.server.track(self, False)

    def handle_one_request(self):
        # Same as BaseHTTPRequestHandler's, plus: idle and in-request timeouts, a bigger
        # request line (queries travel in the URL), and the busy flag shutdown looks at.
        self.busy = False
        if self.server.stopping:
            self.close_connection = True
            return
        try:
            self.connection.settimeout(KEEP_ALIVE_TIMEOUT)
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
            self.busy = True
            self.connection.settimeout(RECEIVE_TIMEOUT)
            if len(self.raw_requestline) > MAX_REQUEST_LINE:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            if self.command not in ("GET", "POST", "HEAD"):
                self.send_error(501, f"Unsupported method ({self.command!r})")
                return
            self.dispatch()
            self.wfile.flush()
        except (TimeoutError, ConnectionError, OSError) as exc:
            if self.busy and self.raw_requestline:
                log.info("connection from %s dropped: %r", self.client_address[0], exc)
            self.close_connection = True

    def log_request(self, code="-", size="-"):
        pass  # dispatch() logs one line per request itself

    def log_message(self, format, *args):
        log.debug("%s %s", self.client_address[0], format % args)

    # -- responses -------------------------------------------------------------------

    def respond(self, status, body, headers=()):
        """Writes a whole response (status line, headers and body in one send)."""
        if self.server.stopping:
            self.close_connection = True
        reason = self.responses.get(status, ("",))[0]
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Date: {self.date_time_string()}",
            "Connection: " + ("Close" if self.close_connection else "Keep-Alive"),
        ]
        if not self.close_connection:
            lines.append(f"Keep-Alive: timeout={int(KEEP_ALIVE_TIMEOUT)}")
        lines.extend(f"{k}: {v}" for k, v in headers)
        lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        if self.command == "HEAD":
            body = b""
        if len(body) <= IO_PIECE:
            self.wfile.write(head + body)
        else:
            self.wfile.write(head)
            self.wfile.write(body)
        self.status_sent = status

    def respond_error(self, err, query_id):
        self.respond(
            err.http_status(),
            err.body(self.server.engine.version),
            [
                ("Content-Type", "text/plain; charset=UTF-8"),
                ("X-ClickHouse-Query-Id", query_id),
                ("X-ClickHouse-Timezone", self.server.engine.timezone),
                ("X-ClickHouse-Exception-Code", str(err.code)),
            ],
        )

    # -- requests --------------------------------------------------------------------

    def dispatch(self):
        started = time.monotonic()
        self.status_sent = None
        self.log_query = ""
        url = urlsplit(self.path)
        try:
            body = RequestBody(self)
        except BodyFramingError as exc:
            self.close_connection = True
            self.respond(400, f"{exc}\n".encode(), [("Content-Type", "text/plain; charset=UTF-8")])
            return
        try:
            if url.path in ("/ping", "/replicas_status"):
                body.drain()
                self.respond(200, b"Ok.\n", [("Content-Type", "text/html; charset=UTF-8")])
            elif url.path in ("/", ""):
                self.handle_query(url.query, body)
            else:
                body.drain()
                text = NO_HANDLER_TEXT.format(path=url.path).encode()
                self.respond(404, text, [("Content-Type", "text/plain; charset=UTF-8")])
        except BodyFramingError as exc:
            log.info("bad request body from %s: %s", self.client_address[0], exc)
            self.close_connection = True
            if self.status_sent is None:
                self.respond(400, f"{exc}\n".encode(), [("Content-Type", "text/plain; charset=UTF-8")])
        finally:
            # Keep-alive needs the whole body read; if it cannot be, close the connection.
            if not body.done and not self.close_connection:
                try:
                    body.drain()
                except (BodyFramingError, ClickHouseError, OSError):
                    self.close_connection = True
            if url.path not in ("/ping",):
                log.info(
                    "%s %s %s %.1fms %s",
                    self.client_address[0],
                    self.command,
                    self.status_sent,
                    (time.monotonic() - started) * 1000,
                    self.log_query,
                )

    def handle_query(self, raw_query_string, body):
        params = dict(parse_qsl(raw_query_string, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            # `GET /` without a query is ClickHouse's static "Ok." handler: no credentials.
            if params.get("query") or self.command not in ("GET", "HEAD") or not body.empty:
                authenticate(self.server.password, self.headers, params)
            self.run_query(params, body, query_id)
        except ClickHouseError as err:
            log.info("query %s failed: %s", query_id, err.message.splitlines()[0][:300])
            self.respond_error(err, query_id)
        except BodyFramingError:
            raise
        except Exception as exc:
            if self.status_sent is not None:
                raise
            log.exception("query %s failed inside the devserver", query_id)
            self.respond_error(ClickHouseError(1001, "STD_EXCEPTION", f"devserver internal error: {exc!r}"), query_id)

    def run_query(self, params, body, query_id):
        engine = self.server.engine
        headers = self.headers
        content_type = headers.get("Content-Type", "")
        content_encoding = headers.get("Content-Encoding", "")

        if body.length_missing:
            raise ClickHouseError(
                381,
                "HTTP_LENGTH_REQUIRED",
                "The Transfer-Encoding is not chunked and there is no Content-Length header for POST request",
            )
        if content_type.lower().startswith("multipart/form-data"):
            # Form fields (query, param_*, settings) come in the body; nothing else does.
            raw = b"".join(decoded_pieces(body.pieces(), content_encoding, False))
            params.update(parse_multipart(raw, content_type))
            pieces = iter(())
        else:
            pieces = decoded_pieces(body.pieces(), content_encoding, params.get("decompress", "0") not in ("0", ""))

        url_query = params.get("query", "")
        if not url_query and self.command in ("GET", "HEAD") and body.empty:
            self.respond(200, b"Ok.\n", [("Content-Type", "text/html; charset=UTF-8")])
            return

        database = params.get("database") or headers.get("X-ClickHouse-Database") or "default"
        default_format = params.get("default_format") or headers.get("X-ClickHouse-Format") or "TabSeparated"
        query_params = {}
        settings = {}
        http_settings = {}
        for name, value in params.items():
            if name.startswith("param_"):
                query_params[name[len("param_") :]] = value
            elif name in RESERVED_PARAMS:
                continue
            elif not SETTING_NAME.match(name):
                raise ClickHouseError(115, "UNKNOWN_SETTING", f"Unknown setting '{name}'")
            elif name in HTTP_ONLY_SETTINGS:
                http_settings[name] = value
            elif name in IGNORED_SETTINGS:
                log.debug("ignoring setting %s=%s", name, value)
            else:
                settings[name] = value

        # The full query is the URL query, a line break, then the body (ClickHouse's rule).
        # When the URL query is an INSERT ... FORMAT whose data starts there, the body is
        # data and is streamed instead of being read as SQL.
        head = url_query.encode("utf-8")
        if head:
            head += b"\n"
            st = scan_statement(head)
            if st.insert_format is not None:
                self.log_query = st.insert_sql[:120]
                self.run_insert(st, head[st.data_offset :], pieces, settings, database, query_id)
                return
            full = head + b"".join(pieces)
        else:
            full = b"".join(pieces)
        st = scan_statement(full)
        if st.insert_format is not None:
            self.log_query = st.insert_sql[:120]
            self.run_insert(st, full[st.data_offset :], iter(()), settings, database, query_id)
            return

        sql = full.decode("utf-8", "replace")
        self.log_query = sql.strip().replace("\n", " ")[:200]
        if st.empty:
            raise ClickHouseError(62, "SYNTAX_ERROR", "Empty query")
        if st.second_statement_at is not None:
            pos = st.second_statement_at
            snippet = sql[pos : pos + 40]
            raise ClickHouseError(
                62,
                "SYNTAX_ERROR",
                f"Syntax error (Multi-statements are not allowed): failed at position {pos + 1}: {snippet}",
            )
        if default_format.lower() in PYTHON_ONLY_FORMATS:
            raise ClickHouseError(73, "UNKNOWN_FORMAT", f"Unknown format {default_format}")

        output, summary = engine.query(sql, default_format, query_params or None, settings, database, st.kind)
        self.respond_ok(output, st.output_format or default_format, summary, params, http_settings, query_id)

    def run_insert(self, st, data_prefix, pieces, settings, database, query_id):
        """INSERT ... FORMAT X: spool the data to a file (outside the engine lock), then
        have the engine insert it from there."""
        spool = Spool(self.server.tmp_dir)
        try:
            started = time.monotonic()
            spool.add(data_prefix)
            for piece in pieces:
                spool.add(piece)
            spool.finish()
            received = time.monotonic()
            summary = self.server.engine.insert(st, spool, settings, database)
            # Where the time went: waiting for the body, or in the engine (incl. its lock).
            self.log_query += " (%d bytes: body %.1fms, engine %.1fms)" % (
                spool.size,
                (received - started) * 1000,
                (time.monotonic() - received) * 1000,
            )
        finally:
            spool.close()
        self.respond_ok(b"", "TabSeparated", summary, {}, {}, query_id)

    def respond_ok(self, output, fmt, summary, params, http_settings, query_id):
        engine = self.server.engine
        summary = dict(summary)
        summary["result_bytes"] = len(output)
        headers = [
            ("Content-Type", content_type_for(fmt)),
            ("X-ClickHouse-Format", fmt),
            ("X-ClickHouse-Query-Id", query_id),
            ("X-ClickHouse-Timezone", engine.timezone),
            ("X-ClickHouse-Server-Display-Name", "the-eye-devserver"),
            # ClickHouse sends every value as a JSON string.
            ("X-ClickHouse-Summary", json.dumps({k: str(v) for k, v in summary.items()}, separators=(",", ":"))),
        ]
        if params.get("compress", "0") not in ("0", ""):
            output = compress_blocks(output)
        enabled = http_settings.get("enable_http_compression")
        enabled = engine.http_compression_default if enabled is None else enabled.lower() in ("1", "true")
        if enabled and output:
            encoding = choose_response_encoding(self.headers.get("Accept-Encoding", ""))
            if encoding:
                try:
                    level = int(http_settings.get("http_zlib_compression_level", "3"))
                except ValueError:
                    level = 3
                output = encode_response(output, encoding, max(1, min(9, level)))
                headers.append(("Content-Encoding", encoding))
        self.respond(200, output, headers)


class DevServer(ThreadingMixIn, HTTPServer):
    # Handler threads are joined at shutdown so in-flight requests finish.
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, engine, tmp_dir, password):
        self.engine = engine
        self.tmp_dir = tmp_dir
        self.password = password
        self.stopping = False
        self._handlers = set()
        self._handlers_lock = threading.Lock()
        super().__init__(address, Handler)

    def track(self, handler, alive):
        with self._handlers_lock:
            (self._handlers.add if alive else self._handlers.discard)(handler)

    def close_idle_connections(self):
        """Wakes the threads that wait for a next request on a kept-alive connection."""
        with self._handlers_lock:
            handlers = list(self._handlers)
        for handler in handlers:
            if not handler.busy:
                try:
                    handler.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle_error(self, request, client_address):
        log.exception("unhandled error serving %s", client_address)


# --------------------------------------------------------------------------- main


def watch_parent(stop, parent_pid):
    """--exit-with-parent: shut down once the process that started us is gone."""
    while not stop.wait(0.5):
        if os.getppid() != parent_pid:
            log.info("parent process %d is gone; shutting down", parent_pid)
            stop.set()


def main():
    parser = argparse.ArgumentParser(description="ClickHouse HTTP interface over chDB, for development and tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--data", required=True, help="directory for the engine's data (kept across restarts)")
    parser.add_argument("--exit-with-parent", action="store_true", help="shut down when the parent process exits")
    parser.add_argument(
        "--parent-pid",
        type=int,
        help="with --exit-with-parent: the PID expected as parent (catches a parent that died before we started)",
    )
    parser.add_argument("--log-level", default=os.environ.get("DEVSERVER_LOG_LEVEL", "INFO"))
    args = parser.parse_args()

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s devserver[%(process)d] %(message)s",
        stream=sys.stderr,
    )
    parent_pid = args.parent_pid or os.getppid()

    data_dir = os.path.abspath(args.data)
    os.makedirs(data_dir, exist_ok=True)
    # Every application's events and the keys' hashes are in there: the owner's only.
    os.chmod(data_dir, 0o700)
    # One server per data directory: two engines on the same files would corrupt them.
    lock_file = open(os.path.join(data_dir, "devserver.lock"), "w")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.error("data directory %s is in use by another devserver", data_dir)
        return 3
    password = ensure_password(data_dir)
    tmp_dir = os.path.join(data_dir, "tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)  # spools left by a killed server
    os.makedirs(tmp_dir)
    if any(c in tmp_dir for c in "*?{}"):
        # The engine reads spooled INSERT data by path and would take these for globs.
        tmp_dir = tempfile.mkdtemp(prefix="the-eye-devserver-spool-")
        log.info("the data directory's path has glob characters; spooling INSERT data in %s", tmp_dir)

    stop = threading.Event()
    # Signals only set the event; the main thread does the shutdown.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    started = time.monotonic()
    engine = Engine(os.path.join(data_dir, "chdb"))
    try:
        server = DevServer((args.host, args.port), engine, tmp_dir, password)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        engine.close()
        return 2
    log.info(
        "ClickHouse %s (chDB) serving http://%s:%d, data in %s (started in %.1fs)",
        engine.version,
        args.host,
        server.server_address[1],
        data_dir,
        time.monotonic() - started,
    )

    if args.exit_with_parent:
        threading.Thread(target=watch_parent, args=(stop, parent_pid), name="watch-parent", daemon=True).start()
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="accept")
    serving.start()
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    log.info("shutting down: finishing in-flight requests")
    server.stopping = True
    server.shutdown()  # stop accepting
    serving.join()
    server.close_idle_connections()
    server.server_close()  # joins the handler threads
    engine.close()  # flush and release the engine so the data is complete on disk
    if not tmp_dir.startswith(data_dir + os.sep):
        shutil.rmtree(tmp_dir, ignore_errors=True)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
