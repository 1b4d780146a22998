"""The ``jaxviz`` command line: a thin layer that parses arguments, calls the library and writes files.

Commands that run a model turn on XLA's persistent compilation cache (``$JAXVIZ_HOME/xla-cache``;
``JAXVIZ_COMPILE_CACHE=0`` leaves it off, as the test suite does).

Each group of subcommands lives in its own module exposing ``register(subparsers)``; every subcommand
sets ``func(args) -> int``. Errors jaxviz raises for bad input (:class:`jaxviz.JaxvizError`), a missing
or unwritable path, and Ctrl-C are reported as one line on stderr with a non-zero exit and no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from ..errors import JaxvizError, printable
from ..parallel import enable_compilation_cache
from ..version import __version__
from . import atlas_cmd, attribution, common, foundation, visualize

#: Modules under ``jaxviz.cli`` whose ``register(subparsers)`` adds subcommands, in help order.
COMMAND_MODULES = (foundation, visualize, attribution, atlas_cmd)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``jaxviz: error: <problem> (see `jaxviz CMD --help`)``, exit status 2.

    argparse's default prints the whole usage block before the error; the usage is one ``--help`` away.
    """

    def error(self, message: str, prog: str | None = None):
        print(f"jaxviz: error: {message} (see `{prog or self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="jaxviz", description="Visualise what convnets learn: VGG16/VGG19 in JAX with Keras's weights."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _version() -> str:
    return f"jaxviz {__version__}"


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns its exit status (0 ok, 1 a check failed, 2 bad input, 130 Ctrl-C)."""
    common.created_folders.clear()
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported against the subcommand, whose --help lists what it takes
            cmd = getattr(args, "command", None)
            parser.error(f"unrecognized arguments: {' '.join(extra)}", prog=f"jaxviz {cmd}" if cmd else None)
    except SystemExit as e:  # --help, --version and argument errors (already printed, one line)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except KeyboardInterrupt:
        print("jaxviz: interrupted", file=sys.stderr)
        return 130
    code = _run(args)
    if code != 0:
        common.remove_empty_created_folders()  # a failed command leaves no empty output folder behind
    if code == 130 and argv is None:
        # Run as the program (not called from Python): leave now. Interpreter teardown while XLA's threads
        # are still inside the interrupted computation can crash (SIGSEGV) instead of exiting with 130.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    return code


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """jaxviz's own warnings (e.g. deeplift's note on layers without a rule) as one line; others as Python's."""
    if os.path.dirname(os.path.abspath(filename)).startswith(os.path.dirname(os.path.dirname(__file__))):
        print(f"jaxviz: warning: {message}", file=sys.stderr if file is None else file)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def _run(args) -> int:
    try:
        if (getattr(args, "command", None) not in ("weights", "summary", "convert")
                and os.environ.get("JAXVIZ_COMPILE_CACHE", "1") != "0"):
            enable_compilation_cache()  # a later run loads the compiled programs instead of compiling again
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except JaxvizError as e:
        print(f"jaxviz: error: {printable(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # on a line of its own: a progress bar may have been drawing on the current one
        print("\njaxviz: interrupted; finished files are kept, nothing half-written was left. "
              "Run the same command again to resume.", file=sys.stderr)
        return 130
    except PermissionError as e:
        print(f"jaxviz: error: cannot write {printable(e.filename)}: permission denied; choose a writable path "
              "with -o/--output", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"jaxviz: error: {printable(e.filename)}: no such file or directory; check the path", file=sys.stderr)
        return 2
    except IsADirectoryError as e:
        print(f"jaxviz: error: {printable(e.filename)} is a directory; give a file path", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"jaxviz: error: {printable(e.strerror or e)} ({printable(e.filename)}); check the path and free space",
              file=sys.stderr)
        return 2
    except MemoryError:
        # a model file's sizes are checked when it is read (and blamed there): this is the computation's memory
        print("jaxviz: error: out of memory while computing; use fewer or smaller images (a smaller --size), or a "
              "smaller model", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: still one line, the traceback on request
        if os.environ.get("JAXVIZ_DEBUG"):
            raise
        if "RESOURCE_EXHAUSTED" in str(e) or "Out of memory" in str(e):  # XLA's own allocation failures
            print("jaxviz: error: out of memory while computing; use fewer or smaller images (a smaller --size), "
                  "or a smaller model", file=sys.stderr)
            return 2
        detail = printable(str(e).splitlines()[0]) if str(e) else ""
        print(f"jaxviz: internal error: {type(e).__name__}: {detail} -- a bug in jaxviz; rerun with "
              "JAXVIZ_DEBUG=1 for the traceback and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
