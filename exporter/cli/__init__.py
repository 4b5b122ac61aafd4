"""``python -m exporter``: a thin argparse layer. Parse -> call the stage -> print (human table or ``--json``).

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int`` and is
registered once in :data:`COMMANDS`. :func:`main` is the one place that turns an error into an exit code: an
:class:`~exporter.errors.ExporterError` prints ``error: <message>`` (and its notes) and returns the class's
``exit_code`` (2 for configuration and model problems, 1 for a failed export or server); nothing else is caught.
Teardown a command registers on ``args.cleanup`` (an :class:`contextlib.ExitStack`) runs after that message.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys

from ..errors import ExporterError

COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("exporter.cli.plan", "show, per model, the resolved precision and why"),
    "build": ("exporter.cli.build", "export the planned models and publish a Triton model repository"),
    "serve": ("exporter.cli.serve", "run a real local Triton server over a built repository"),
    "export": ("exporter.cli.export", "build, quality-gate and publish one artefact directory per model"),
    "eval": ("exporter.cli.eval", "STS-B Spearman per precision vs the sentence-transformers fp32 reference"),
    "repo": ("exporter.cli.repo", "list the builds published to an object store, or delete unreferenced ones"),
    "deploy": ("exporter.cli.deploy", "generate deployment manifests (Kubernetes) for a built repository"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; with ``only``, just that command's module is imported (others stay listed in --help).

    Command modules may import the heavy export stack (torch, onnxruntime): ``plan`` or ``serve`` must not pay
    for what ``build`` needs.
    """
    parser = argparse.ArgumentParser(prog="python -m exporter", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if only in (None, name):
            mod = importlib.import_module(module)
            mod.add_arguments(cmd)
            cmd.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
    with contextlib.ExitStack() as args.cleanup:
        try:
            return int(args._run(args) or 0)
        except ExporterError as exc:
            print(f"error: {exc}", *exc.notes, sep="\n", file=sys.stderr)
            return exc.exit_code
