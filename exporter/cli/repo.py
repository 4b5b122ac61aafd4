"""``exporter repo ls|gc URL``: the builds published under an object-store root, and removing unreferenced ones."""

from __future__ import annotations

import argparse
import json

from .. import objectstore
from .context import add_output_arguments, configure_logging, print_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("ls", "gc"), help="ls: list builds; gc: delete unreferenced builds")
    parser.add_argument("url", help="the root given to 'exporter build --repository' (s3://, gs://, as://)")
    parser.add_argument("--keep", type=int, default=3, metavar="N",
                        help="gc: complete builds to keep, the current one included (default 3)")
    parser.add_argument("--min-age", type=float, default=3600.0, metavar="S",
                        help="gc: delete an incomplete build only when its newest object is this old; younger ones "
                             "may be uploads in progress (default 3600)")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    configure_logging(args)
    if args.action == "gc":
        deleted = objectstore.gc(args.url, keep=args.keep, min_age=args.min_age)
        print(json.dumps({"deleted": deleted}) if args.json else
              f"deleted {len(deleted)} build(s) from {args.url}" + "".join(f"\n  {b}" for b in deleted))
        return 0
    builds = objectstore.list_builds(args.url)
    if args.json:
        print(json.dumps([b.to_dict() for b in builds], indent=2))
        return 0
    if not builds:
        print(f"no builds under {args.url}")
        return 0
    rows = [("BUILD", "STATE", "CREATED", "MB", "MODELS")]
    rows += [(b.build_id, ("current" if b.current else "complete") if b.complete else "incomplete",
              b.created_at or "-", f"{b.size / 1e6:.1f}", ",".join(b.models) or "-") for b in builds]
    print_table(rows)
    return 0
