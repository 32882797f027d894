"""The founding example of the DSL (log_count.dd, docs/dsl.rst) written with decorators, and
its functions.

``system_HTTPGet`` is the platform's I/O function; here a compute function stands in for
it, answering from a dictionary of fake server logs so the test needs no network.
"""

from __future__ import annotations

import dandelion as dd

LOGS = {
    "alpha": "ok\nERROR disk\nok\nERROR net\n",
    "beta": "ok\nok\n",
    "gamma": "ERROR cpu\n",
}


@dd.compute
def makeGetRequests(serverList: str) -> list[str]:
    return [f"GET /logs/{name}" for name in serverList.split(",") if name]


@dd.compute
def system_HTTPGet(getRequest: str) -> str:
    return LOGS[getRequest.rsplit("/", 1)[1]]


@dd.compute
def sumOccurance(log: str, pattern: str) -> int:
    return log.count(pattern)


@dd.compute
def sumSet(partialSums: list[int]) -> int:
    return sum(partialSums)


@dd.composition
def log_count(eventPattern: str, serverList: str):  # type: ignore[no-untyped-def]
    requestSet = makeGetRequests(serverList)
    logSet = system_HTTPGet(dd.each(requestSet))
    partialSums = sumOccurance(dd.each(logSet), eventPattern)
    totalSum = sumSet(partialSums)
    return totalSum
