"""Serve one bare app: `python -m bench.servers KIND --port P [--loop asyncio] [--database-url URL]`.

KIND is bare, bare3 (three nested sub-apps), naive3 (the same with naive middlewares), floor3
(the same with one pass-through middleware and one empty signal handler), votes
(the polls vote without Nestor), product (the greeter, the polls API list and page and the home
page of `nestor serve` on the default nestor.toml, by hand), or many:N (N hand-mounted sub-apps).
Served by `web.run_app` with aiohttp's defaults, as a bare aiohttp user would: nothing reaches
the access log unless `--access-log` sets up logging (INFO, to stderr) with a line like Nestor's.
"""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from nestor.serve import loop_factory

from . import trees

# Nestor's text log format, and aiohttp's access line with what it knows of Nestor's fields:
# `127.0.0.1 "GET /greeter/api/hello HTTP/1.1" 200 39 0.000123` (Nestor's adds handler, app, rid).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'


def build(kind: str, database_url: str | None) -> web.Application:
    if kind == "bare":
        return trees.bare()
    if kind == "bare3":
        return trees.bare_depth3()
    if kind == "naive3":
        return trees.naive_depth3()
    if kind == "floor3":
        return trees.floor_depth3()
    if kind == "votes":
        if not database_url:
            raise SystemExit("votes needs --database-url")
        return trees.bare_votes(database_url)
    if kind == "product":
        if not database_url:
            raise SystemExit("product needs --database-url")
        return trees.bare_product(database_url)
    if kind.startswith("many:"):
        return trees.bare_many(int(kind.partition(":")[2]))
    raise SystemExit(f"unknown kind {kind!r}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("kind")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--database-url")
    parser.add_argument("--access-log", action="store_true",
                        help="log every request: aiohttp's AccessLogger through logging, INFO, to stderr")
    args = parser.parse_args()
    app = build(args.kind, args.database_url)
    extra = {}
    if args.access_log:  # what a bare aiohttp user writes to see requests in the log
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
        extra["access_log_format"] = ACCESS_LOG_FORMAT
    web.run_app(app, host="127.0.0.1", port=args.port, loop=loop_factory(args.loop)(), print=None, **extra)


if __name__ == "__main__":
    main()
