"""HTTP requests and responses as values, and their text encoding in items.

Items of the HTTP I/O functions hold the reference system's text encoding, so ``.dcl`` and
``.dd`` compositions written for it work unchanged and sandboxes see plain bytes:

* a **request** item: ``METHOD URL HTTP/1.1``, then ``Name:value`` header lines, a blank
  line and the body;
* a **response** item: the status line ``HTTP/1.1 200 OK``, ``name:value`` header lines, a
  blank line and the body (``HTTP`` splits it in a ``headers`` and a ``bodies`` item).

Lines end in ``\\n`` (``\\r\\n`` is accepted).  Python code sees :class:`HttpRequest` and
:class:`HttpResponse` objects: annotate a parameter or result with them and the items are
converted on the way in and out.

>>> r = HttpRequest("POST", "http://127.0.0.1:8080/x", {"Content-Type": "text/plain"}, b"hi")
>>> r.to_item_value()
b'POST http://127.0.0.1:8080/x HTTP/1.1\\nContent-Type:text/plain\\n\\nhi'
>>> HttpRequest.from_item_value(r.to_item_value()) == r
True
>>> HttpRequest.from_item_value("http://example.org/a").method
'GET'
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Iterable, Mapping, Union

import attrs

from dandelion.ir.types import ElementType

Headers = tuple[tuple[str, str], ...]
HeadersLike = Union[Mapping[str, str], Iterable[tuple[str, str]], None]

#: Methods a request may use (any other token is refused before anything is sent).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"})
#: Methods that may be retried: repeating them has the same effect as sending them once.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})


def _headers(value: HeadersLike) -> Headers:
    if value is None:
        return ()
    pairs = value.items() if isinstance(value, Mapping) else value
    out = []
    for name, val in pairs:
        name, val = str(name), str(val)
        if not name or any(c in name for c in ":\r\n ") or any(c in val for c in "\r\n"):
            raise ValueError(f"invalid header {name!r}: {val!r}")
        out.append((name, val))
    return tuple(out)


def _method(value: Any) -> str:
    return str(value).upper()


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


def _item_bytes(value: Any, what: str) -> bytes:
    """The bytes of an item value that encodes a ``what`` (bytes-like or str)."""
    if not isinstance(value, (bytes, bytearray, memoryview, str)):
        raise TypeError(f"a {what} is bytes or str, not {type(value).__name__}")
    return value.encode() if isinstance(value, str) else bytes(value)


def _split(data: bytes) -> tuple[list[str], bytes]:
    """The head lines and the body of an HTTP text encoding."""
    found = [(i, sep) for sep in (b"\r\n\r\n", b"\n\n", b"\n\r\n")
             if (i := data.find(sep)) >= 0]
    if found:
        at, sep = min(found)
        head, body = data[:at], data[at + len(sep):]
    else:
        head, body = data.rstrip(b"\r\n"), b""
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    return lines, body


def _parse_headers(lines: list[str]) -> Headers:
    out = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise ValueError(f"header line {line!r} is not 'Name:value'")
        out.append((name.strip(), value.strip()))
    return tuple(out)


def _head_value(headers: Headers, name: str) -> str | None:
    lower = name.lower()
    return next((v for k, v in headers if k.lower() == lower), None)


@attrs.frozen
class HttpRequest:
    """An HTTP request to be sent by the ``http`` I/O functions.

    Attributes:
        method: ``GET``, ``POST`` … (upper case).
        url: an absolute ``http://`` or ``https://`` URL.
        headers: ``(name, value)`` pairs (a dict is accepted).
        body: the request body.
    """

    __dandelion_element__: ClassVar[ElementType] = ElementType.BYTES

    method: str = attrs.field(converter=_method)
    url: str = attrs.field(converter=str)
    headers: Headers = attrs.field(default=(), converter=_headers)
    body: bytes = attrs.field(default=b"", converter=_bytes)

    @method.validator
    def _check_method(self, _attribute: Any, method: str) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown HTTP method {method!r} "
                             f"(use one of {', '.join(sorted(METHODS))})")

    @url.validator
    def _check_url(self, _attribute: Any, url: str) -> None:
        if not url or any(c in url for c in " \r\n\t"):
            raise ValueError(f"invalid URL {url!r}")

    @classmethod
    def get(cls, url: str, headers: HeadersLike = None) -> HttpRequest:
        """A ``GET`` request for ``url``."""
        return cls("GET", url, headers)

    @classmethod
    def post(cls, url: str, body: bytes | str = b"", headers: HeadersLike = None
             ) -> HttpRequest:
        """A ``POST`` request for ``url`` with ``body``."""
        return cls("POST", url, headers, body)

    @property
    def idempotent(self) -> bool:
        """Whether sending the request twice has the effect of sending it once."""
        return self.method in IDEMPOTENT

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or ``None``."""
        return _head_value(self.headers, name)

    def to_item_value(self) -> bytes:
        """The request's text encoding."""
        head = [f"{self.method} {self.url} HTTP/1.1"]
        head += [f"{k}:{v}" for k, v in self.headers]
        return ("\n".join(head) + "\n\n").encode("latin-1") + self.body

    @classmethod
    def from_item_value(cls, value: Any) -> HttpRequest:
        """Parse a request item: the text encoding, or a bare URL meaning ``GET URL``.

        Raises:
            ValueError: the value is not a request.
        """
        if isinstance(value, HttpRequest):
            return value
        data = _item_bytes(value, "request")
        lines, body = _split(data)
        first = lines[0].strip()
        words = first.split()
        if len(words) == 1 and len(lines) == 1 and not body and "://" in words[0]:
            return cls("GET", words[0])
        if len(words) not in (2, 3) or (len(words) == 3 and not words[2].startswith("HTTP/")):
            raise ValueError(f"request line {first[:80]!r} is not 'METHOD URL HTTP/1.1'")
        return cls(words[0], words[1], _parse_headers([x for x in lines[1:] if x.strip()]),
                   body)


@attrs.frozen
class HttpResponse:
    """The response to an :class:`HttpRequest`.

    Attributes:
        status: the status code.
        reason: the reason phrase (``OK``).
        headers: ``(name, value)`` pairs, names as the server sent them.
        body: the body, complete.
    """

    __dandelion_element__: ClassVar[ElementType] = ElementType.BYTES

    status: int
    reason: str = ""
    headers: Headers = attrs.field(default=(), converter=_headers)
    body: bytes = attrs.field(default=b"", converter=_bytes)

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or ``None``."""
        return _head_value(self.headers, name)

    def text(self, encoding: str = "utf-8") -> str:
        """The body decoded as text."""
        return self.body.decode(encoding, "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def head_bytes(self) -> bytes:
        """The status line and header lines (the ``headers`` item of ``HTTP``)."""
        lines = [f"HTTP/1.1 {self.status} {self.reason}".rstrip()]
        lines += [f"{k}:{v}" for k, v in self.headers]
        return "\n".join(lines).encode("latin-1", "replace")

    def to_item_value(self) -> bytes:
        """The response's text encoding: head, blank line, body."""
        return self.head_bytes() + b"\n\n" + self.body

    @classmethod
    def from_item_value(cls, value: Any) -> HttpResponse:
        """Parse a response item (a ``headers`` item alone gives an empty body).

        Raises:
            ValueError: the value is not a response.
        """
        if isinstance(value, HttpResponse):
            return value
        data = _item_bytes(value, "response")
        lines, body = _split(data)
        words = lines[0].split(None, 2)
        if len(words) < 2 or not words[0].startswith("HTTP/") or not words[1].isdigit():
            raise ValueError(f"status line {lines[0][:80]!r} is not 'HTTP/1.1 CODE REASON'")
        reason = words[2] if len(words) == 3 else ""
        return cls(int(words[1]), reason, _parse_headers([x for x in lines[1:] if x.strip()]),
                   body)
