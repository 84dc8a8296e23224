"""The ``edgemem`` command. Each package contributes its subcommands through ``<package>/commands.py``
(a ``register(subparsers)`` function); user errors print one line and exit non-zero."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import edgemem
import edgemem.export  # noqa: F401  (registers the PyTorch runtimes "torch" and "torch-cuda")
from edgemem.errors import EdgememError

# Order of the subcommand groups in --help: the packages as the pipeline runs.
_PACKAGES = ("models", "export", "runtimes", "data", "train", "bench", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgemem", description=edgemem.__doc__)
    parser.add_argument("--version", action="version", version=f"edgemem {edgemem.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for pkg in _PACKAGES:
        names = {m.name for m in pkgutil.iter_modules([f"{edgemem.__path__[0]}/{pkg}"])}
        if "commands" in names:
            importlib.import_module(f"edgemem.{pkg}.commands").register(sub)
    importlib.import_module("edgemem.serve.stream_commands").register(sub)
    importlib.import_module("edgemem.demo").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except EdgememError as e:
        print(f"edgemem {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edgemem {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
