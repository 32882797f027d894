"""``dandelion cache info | clear`` and the cache options of ``dandelion run`` and
``dandelion serve``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dandelion.cache.cache import namespace_of, open_cache


def add_run_options(p: argparse.ArgumentParser) -> None:
    """``--cache``, ``--no-cache`` and ``--refresh`` of ``dandelion run``."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--no-cache", action="store_true",
                       help="neither look up nor keep results")
    group.add_argument("--refresh", action="store_true",
                       help="recompute everything and keep the new results")
    _add_location(p)


def _add_location(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", metavar="DIR|URL", dest="cache_location",
                   help="where results are kept: a directory or a redis:// URL (default: "
                        "memory in front of $DANDELION_CACHE_DIR or the user cache directory)")


def runtime_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``cache=`` of the runtime ``dandelion run`` makes."""
    if args.no_cache:
        return {"cache": False}
    if args.cache_location:
        return {"cache": ["memory", args.cache_location]}
    return {}


def add_serve_option(p: argparse.ArgumentParser) -> None:
    """``--cache`` of ``dandelion serve``."""
    p.add_argument("--cache", metavar="memory|DIR|URL|off", dest="cache_location",
                   default="memory",
                   help="where the results of function instances are kept, a namespace per "
                        "tenant: 'memory' (the default), a directory or a redis:// URL "
                        "(with memory in front), or 'off'")


def serve_cache(args: argparse.Namespace) -> Any:
    """The ``cache`` of the :class:`~dandelion.server.ServerConfig` ``dandelion serve``
    makes."""
    where = args.cache_location
    if where == "off":
        return None
    return where if where == "memory" else ["memory", where]


def run_mode(args: argparse.Namespace) -> bool | str:
    """The run's use of the cache: ``True``, ``False`` or ``"refresh"``."""
    return "refresh" if args.refresh else not args.no_cache


def cmd_cache(args: argparse.Namespace) -> int:
    cache = open_cache(args.cache_location or True)
    assert cache is not None
    if args.action == "clear":
        # a tenant's name, as the server names its namespace (never a path: not "..")
        removed = cache.store.clear(namespace_of(args.namespace) if args.namespace else None)
        where = f" of namespace '{args.namespace}'" if args.namespace else ""
        print(f"removed {removed} entries{where}")
        return 0
    info = cache.store.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for store in info.get("stores", [info]):
        if store.get("kind") == "memory":
            continue  # a new process's memory store is empty
        limit = store.get("max_bytes")
        print(f"{store['kind']}: {store.get('location', '')}\n  entries: {store['entries']}"
              f"\n  bytes:   {store['bytes']}" + (f" of at most {limit}" if limit else ""))
    return 0


def add_commands(sub: Any) -> None:
    """``dandelion cache info | clear``."""
    p = sub.add_parser("cache", help="show or clear the result cache")
    p.add_argument("action", choices=("info", "clear"))
    p.add_argument("--namespace", metavar="TENANT",
                   help="clear only this server tenant's namespace (give the tenant's name)")
    p.add_argument("--json", action="store_true", help="info as JSON")
    _add_location(p)
    p.set_defaults(func=cmd_cache)
