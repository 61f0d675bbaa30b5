"""The review command: `review DATA|RUN` (a local page to fix the data, decisions written to a corrections file)."""

from __future__ import annotations

import argparse
from pathlib import Path

from catsdogs.cli.common import add_command, port_number


def register(commands) -> None:
    add_review(commands)


def add_review(commands) -> None:
    p = add_command(commands, "review", cmd_review, "a local page to fix the data: relabel or exclude the audit's "
                    "findings (and a RUN's mistakes) by keyboard, into a corrections file prepare applies")
    p.add_argument("target", type=Path, metavar="DATA|RUN", help="a prepared DATA, or a RUN (its DATA, audit and "
                   "test predictions)")
    p.add_argument("--corrections", type=Path, metavar="FILE", help="where decisions go (default "
                   "DATA/corrections.csv or RUN/corrections.csv); an existing file is continued")
    p.add_argument("--unlabeled", type=Path, metavar="FOLDER", help="a RUN only: also rank these unlabeled photos "
                   "by the model's doubt (with diversity) to label them")
    p.add_argument("--labeled", type=Path, metavar="FILE", help="with --unlabeled: the path,label CSV the labels "
                   "go to (default RUN/labeled.csv)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=8000, help="default 8000; 0 picks a free port")


def cmd_review(args: argparse.Namespace) -> None:
    from catsdogs.review import apply_command, create_app, open_review
    from catsdogs.serve import listen, serve_forever, url_of

    sock = listen(args.host, args.port)  # first: a busy port is said before any audit, and no URL before it
    review = open_review(args.target, corrections=args.corrections, unlabeled=args.unlabeled, labeled=args.labeled)
    done = len(review.decisions())
    print(f"review of {args.target}: {len(review.queue.items)} items ({done} already decided); decisions go to "
          f"{review.corrections_path}{' and ' + str(review.labeled_path) if review.labeled_path else ''}")
    print(f"open {url_of(sock)} (Ctrl-C to stop); then: {apply_command(args.target, review.corrections_path)}",
          flush=True)
    serve_forever(create_app(review), sock)
