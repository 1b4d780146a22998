"""The ``jaxviz`` command line: a thin layer that parses arguments, calls the library and writes files.

Each group of subcommands lives in its own module exposing ``register(subparsers)``; every subcommand
sets ``func(args) -> int``. Errors jaxviz raises for bad input (:class:`jaxviz.JaxvizError`), a missing
or unwritable path, and Ctrl-C are reported as one line on stderr with a non-zero exit and no traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import JaxvizError

#: Modules under ``jaxviz.cli`` whose ``register(subparsers)`` adds subcommands, in help order.
COMMAND_MODULES = ("foundation", "visualize", "attribution", "throughput")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="jaxviz", description="Visualise what convnets learn: VGG16/VGG19 in JAX with Keras's weights."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # that group of commands is not part of this build
            raise
        module.register(sub)
    return parser


def _version() -> str:
    from .. import __version__

    return f"jaxviz {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except JaxvizError as e:
        print(f"jaxviz: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxviz: interrupted; finished files are kept, nothing half-written was left. "
              "Run the same command again to resume.", file=sys.stderr)
        return 130
    except PermissionError as e:
        print(f"jaxviz: error: cannot write {e.filename}: permission denied; choose a writable path "
              "with -o/--output", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"jaxviz: error: {e.filename}: no such file or directory; check the path", file=sys.stderr)
        return 2
    except IsADirectoryError as e:
        print(f"jaxviz: error: {e.filename} is a directory; give a file path", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"jaxviz: error: {e.strerror or e} ({e.filename}); check the path and free space",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
