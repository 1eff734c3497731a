"""Serve one bare app: `python -m bench.servers KIND --port P [--loop asyncio] [--database-url URL]`.

KIND is bare, bare3 (three nested sub-apps), naive3 (the same with naive middlewares), floor3
(the same with one pass-through middleware and one empty signal handler), votes
(the polls vote without Nestor), or many:N (N hand-mounted sub-apps). Served by `web.run_app`
with aiohttp's defaults, as a bare aiohttp user would.
"""

from __future__ import annotations

import argparse

from aiohttp import web

from nestor.serve import loop_factory

from . import trees


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
    if kind.startswith("many:"):
        return trees.bare_many(int(kind.partition(":")[2]))
    raise SystemExit(f"unknown kind {kind!r}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("kind")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--database-url")
    args = parser.parse_args()
    app = build(args.kind, args.database_url)
    web.run_app(app, host="127.0.0.1", port=args.port, loop=loop_factory(args.loop)(), print=None)


if __name__ == "__main__":
    main()
