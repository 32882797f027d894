"""The HTTP I/O functions: ``http``, ``HTTP`` (the reference system's) and ``system_HTTPGet``.

Every request item is sent concurrently (within the worker's limits); every response item
keeps the name and key of its request, so results can be matched up with ``keyed``.

==================  ==========================  ==========================================
function            takes                       gives
==================  ==========================  ==========================================
``http``            ``requests``                ``responses``: status line, headers,
                                                blank line, body (``dd.HttpResponse``)
``HTTP``            ``requests``                ``headers`` (status + header lines) and
                                                ``bodies`` (raw body), one of each
``system_HTTPGet``  ``request`` (a URL or a     ``body``; a status other than 2xx fails
                    ``GET`` request)            the instance
==================  ==========================  ==========================================

A request item is the text encoding of :class:`~dandelion.io.values.HttpRequest` (or a bare
URL, meaning ``GET``), as bytes or str.
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

from dandelion.io.engine import IoEngine, item_like
from dandelion.io.errors import IoError
from dandelion.io.functions import Items, platform_function
from dandelion.io.values import HttpRequest, HttpResponse
from dandelion.items import Item


def _request(item: Item[Any]) -> HttpRequest:
    try:
        return HttpRequest.from_item_value(item.value)
    except (ValueError, TypeError) as e:
        label = f"'{item.name}' " if item.name else ""
        raise IoError(f"request item {label}(key {item.key}) is not an HTTP request: {e}",
                      hint="write 'METHOD URL HTTP/1.1', header lines 'Name:value', a blank "
                           "line and the body, or use dd.HttpRequest") from None


async def _send_all(engine: IoEngine, items: Items) -> list[HttpResponse]:
    requests = [_request(item) for item in items]
    return list(await asyncio.gather(*(engine.http(r) for r in requests)))


@platform_function("http", params=[("requests", "set[any]")],
                   results=[("responses", "set[bytes]")])
async def http(engine: IoEngine, inputs: Sequence[Items]) -> list[Items]:
    """Send every request; each response is one item (``dd.HttpResponse`` in Python)."""
    items = inputs[0]
    responses = await _send_all(engine, items)
    return [tuple(item_like(i, r.to_item_value()) for i, r in zip(items, responses))]


@platform_function("HTTP", params=[("requests", "set[any]")],
                   results=[("headers", "set[bytes]"), ("bodies", "set[bytes]")])
async def http_split(engine: IoEngine, inputs: Sequence[Items]) -> list[Items]:
    """Send every request; each response gives a ``headers`` and a ``bodies`` item."""
    items = inputs[0]
    responses = await _send_all(engine, items)
    return [tuple(item_like(i, r.head_bytes()) for i, r in zip(items, responses)),
            tuple(item_like(i, r.body) for i, r in zip(items, responses))]


@platform_function("system_HTTPGet", params=[("request", "set[any]")],
                   results=[("body", "set[bytes]")])
async def system_http_get(engine: IoEngine, inputs: Sequence[Items]) -> list[Items]:
    """GET every URL (or GET request); the body of each 2xx response is one item."""
    items = inputs[0]
    requests = [_request(item) for item in items]
    for request in requests:
        if request.method != "GET":
            raise IoError(f"system_HTTPGet sends GET requests, not {request.method} "
                          f"({request.url})", hint="use the http function for other methods")
    responses = await asyncio.gather(*(engine.http(r) for r in requests))
    for request, response in zip(requests, responses):
        if not response.ok:
            raise IoError(f"GET {request.url} answered {response.status} {response.reason}",
                          hint="use the http function to receive error responses as data")
    return [tuple(item_like(i, r.body) for i, r in zip(items, responses))]
