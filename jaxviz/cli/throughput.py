"""``jaxviz bench``: the filter-pattern benchmark (jaxviz vs Keras on JAX and TensorFlow), see :mod:`jaxviz.bench`."""

from __future__ import annotations


def register(sub) -> None:
    from ..bench import add_arguments

    p = sub.add_parser(
        "bench",
        help="time filter patterns: jaxviz vs Keras (JAX / TensorFlow backends), GFLOP/s and %% of peak",
        description="Times the book's filter-pattern ascent with jaxviz and with keras.io-style Keras loops, "
                    "interleaved in one run, on seeded random VGG16 weights (speed does not depend on them).",
    )
    add_arguments(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..bench import main_from_args

    return main_from_args(args)
