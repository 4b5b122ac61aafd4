"""``python -m client``: embed texts, list served models, check health, from a shell.

Exit codes say what went wrong, so scripts can branch on them:
0 ok, 1 server reachable but not ready (``health``), 2 bad usage or input, 3 server unavailable,
4 model not found, 5 server error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ._common import DEFAULT_URL, ENV_MODEL, ENV_URL, Timeouts
from ._sync import EmbeddingClient
from .errors import EmbeddingError, InvalidInput, ModelNotFound, ServerError, ServerUnavailable

EXIT_NOT_READY = 1
EXIT_USAGE = 2
EXIT_SERVER_ERROR = 5
EXIT_CODES: dict[type[EmbeddingError], int] = {InvalidInput: EXIT_USAGE, ServerUnavailable: 3, ModelNotFound: 4,
                                               ServerError: EXIT_SERVER_ERROR}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help=f"Triton HTTP endpoint host:port (default: ${ENV_URL} or {DEFAULT_URL})")
    parser.add_argument("--model", help=f"served model name (default: ${ENV_MODEL}, or the only one served)")
    parser.add_argument("--timeout", type=float, default=Timeouts.request,
                        help="seconds per request attempt (default: %(default)s)")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="extra HTTP header for every request, e.g. 'Authorization: Bearer TOKEN' (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log retries and requests")
    commands = parser.add_subparsers(dest="command", required=True)

    embed = commands.add_parser("embed", help="embed texts and print (or save) the vectors")
    embed.add_argument("texts", nargs="*", help="texts to embed")
    embed.add_argument("--file", type=Path, help="also embed every line of this UTF-8 file (one text per line)")
    embed.add_argument("--batch-size", type=int, help="texts per request (default: the model's max_batch_size)")
    prompt = embed.add_mutually_exclusive_group()
    prompt.add_argument("--prompt-name", metavar="NAME",
                        help="one of the model's prompts (see 'models'), prepended to every text; default: the "
                             "model's default prompt, if it has one")
    prompt.add_argument("--prompt", metavar="TEXT", help="an explicit prefix for every text ('' turns the default "
                                                         "prompt off)")
    embed.add_argument("--dimensions", type=int, metavar="K",
                       help="keep the first K dimensions, re-normalized when the model normalizes (default: the "
                            "model's truncate_dim, else all)")
    output = embed.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true",
                        help="print {model, dim, embeddings, token_counts} as JSON (token_counts: null when the "
                             "model was built without them)")
    output.add_argument("--npy", type=Path, metavar="OUT", help="save the (n, dim) float32 array to OUT (.npy)")

    models = commands.add_parser("models", help="list the served embedding models")
    models.add_argument("--json", action="store_true", help="print a JSON list")

    health = commands.add_parser("health", help="is the server (and --model) ready? exit 0 if so, 1 if not")
    health.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="keep polling up to SECONDS before giving up (default: one check)")
    return parser


def _read_texts(args: argparse.Namespace) -> list[str]:
    texts = list(args.texts)
    if args.file is not None:
        try:
            texts += args.file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"--file {args.file}: {exc}", index=None, reason=str(exc)) from None
    if not texts:
        raise InvalidInput("nothing to embed: give texts as arguments or --file F", index=None, reason="no texts")
    return texts


def _embed(client: EmbeddingClient, args: argparse.Namespace) -> int:
    texts = _read_texts(args)
    info = client.model_info()
    options = {"prompt_name": args.prompt_name, "prompt": args.prompt, "dimensions": args.dimensions}
    if info.token_counts:
        result = client.embed_with_usage(texts, **options)
        vectors, counts = result.vectors, result.token_counts.tolist()
    else:  # a repository built before TOKEN_COUNT existed
        vectors, counts = client.embed(texts, **options), None
    if args.npy is not None:
        np.save(args.npy, vectors)
        print(f"wrote {vectors.shape[0]}x{vectors.shape[1]} float32 embeddings from {info.name} to {args.npy}")
    elif args.json:
        json.dump({"model": info.name, "dim": int(vectors.shape[1]), "embeddings": vectors.tolist(),
                   "token_counts": counts}, sys.stdout)
        print()
    else:
        for i, (text, vector) in enumerate(zip(texts, vectors)):
            head = ", ".join(f"{x:+.4f}" for x in vector[:4])
            tokens = f" tokens={counts[i]}" if counts is not None else ""
            print(f"[{head}, ...] dim={vector.shape[0]} norm={np.linalg.norm(vector):.3f}{tokens}  {text[:60]!r}")
    return 0


def _models(client: EmbeddingClient, args: argparse.Namespace) -> int:
    served = client.models()
    if args.json:
        json.dump([vars(m) for m in served], sys.stdout, indent=2)
        print()
    elif not served:
        print(f"no embedding models are served at {client.settings.url}")
    else:
        print(f"{'name':<28} {'dim':>5} {'tokens':>6} {'precision':<10} {'route':<20} source")
        for m in served:
            print(f"{m.name:<28} {m.dim:>5} {m.max_seq_length or '-':>6} {m.precision or '-':<10} {m.route or '-':<20} "
                  f"{m.source or '-'}")
            extras = [f"prompts: {', '.join(f'{k}={v!r}' for k, v in m.prompts.items())}" if m.prompts else "",
                      f"default prompt: {m.default_prompt_name}" if m.default_prompt_name else "",
                      f"truncate_dim: {m.truncate_dim}" if m.truncate_dim else "",
                      "" if m.normalized else "not normalized"]
            if any(extras):
                print(f"{'':<28} " + "; ".join(e for e in extras if e))
    return 0


def _health(client: EmbeddingClient, args: argparse.Namespace) -> int:
    target = f"Triton at {client.settings.url}" + (f", model {client.settings.model!r}"
                                                     if client.settings.model else "")
    try:
        client.wait_until_ready(timeout=args.wait)
    except ServerUnavailable:
        print(f"not ready: {target}", file=sys.stderr)
        return EXIT_NOT_READY
    print(f"ready: {target}")
    return 0


COMMANDS: dict[str, Callable[[EmbeddingClient, argparse.Namespace], int]] = {
    "embed": _embed, "models": _models, "health": _health}


def _parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"--header {text!r}: expected 'NAME: VALUE'")
    return name.strip(), value.strip()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        headers = dict(_parse_header(h) for h in args.header)
        client = EmbeddingClient(args.url, model=args.model, batch_size=getattr(args, "batch_size", None),
                                 timeouts=Timeouts(connect=min(5.0, args.timeout), request=args.timeout),
                                 headers=headers)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with client:
            return COMMANDS[args.command](client, args)
    except EmbeddingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return next((code for kind, code in EXIT_CODES.items() if isinstance(exc, kind)), EXIT_SERVER_ERROR)
    except ValueError as exc:  # e.g. --batch-size above the model's max_batch_size
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit does not fail again
        return 0
