"""The methods' argument checks: models, inputs, targets, scores, reductions and counts (one clear
:class:`jaxviz.JaxvizError` line each)."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import JaxvizError

SCORES = ("logit", "prob", "log_prob")
REDUCTIONS = ("sum", "mean", "max", "abs_max", "abs_sum", "norm")


def check_model(model, name: str) -> None:
    if not model.include_top:
        raise JaxvizError(f"{name} explains a class score and needs the classifier: load the model with "
                          "include_top=True")


def check_input(model, x) -> jax.Array:
    return model.check_input(x)


def num_classes(model) -> int:
    return int(model.num_classes)


def check_targets(model, target, n: int) -> jax.Array:
    """``target`` → int32 ``[N]``; ``-1`` marks "this image's top class" (resolved inside the program)."""
    if target is None:
        return jnp.full((n,), -1, jnp.int32)
    k = num_classes(model)
    try:
        if np.ndim(target) == 0:
            t = np.full((n,), operator.index(target), np.int64)
        else:
            t = np.asarray([operator.index(v) for v in np.asarray(target).reshape(-1)], np.int64)
    except TypeError:
        raise JaxvizError(f"target must be a class index or one per image, got {target!r}") from None
    if t.shape != (n,):
        raise JaxvizError(f"got {t.shape[0]} targets for {n} images; give one class, or one per image")
    bad = [int(v) for v in t if not 0 <= v < k]
    if bad:
        raise JaxvizError(f"class {bad[0]} out of range: the model has {k} classes (0..{k - 1})")
    return jnp.asarray(t, jnp.int32)


def check_choice(value, choices: Sequence, what: str):
    if value not in choices:
        raise JaxvizError(f"unknown {what} {value!r}; use one of: {', '.join(map(str, choices))}")
    return value


def check_reduce(reduce: str | None) -> str | None:
    if reduce is None:
        return None
    return check_choice(reduce, REDUCTIONS, "reduce")


def check_positive(value, what: str) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise JaxvizError(f"{what} must be a positive integer, got {value!r}") from None
    if v < 1:
        raise JaxvizError(f"{what} must be a positive integer, got {value!r}")
    return v


def params_of(model, params):
    return model.params if params is None else params


def check_score(model, score: str) -> str:
    """Validates ``score`` (one of :data:`SCORES`) and returns it as computed for ``model``'s head: with
    ``"sigmoid_"`` in front for a model whose output is a sigmoid (a binary classifier's single unit gives
    the logits ``[-z, z]``, see :mod:`jaxviz.graph`), whose probabilities are the logits' sigmoids."""
    if score.startswith("sigmoid_") and score[len("sigmoid_"):] in SCORES:
        return score
    check_choice(score, SCORES, "score")
    graph = model.graph
    return f"sigmoid_{score}" if graph is not None and graph.head_activation == "sigmoid" else score
