"""Class scores and their gradients (all traced): the score of each image's target class, top-class targets,
one input gradient, and the per-(image, sample) random keys of the sampling methods."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from .programs import logits


def probabilities(logits: jax.Array, score: str) -> jax.Array:
    """The model's class probabilities from its logits: their softmax, or for a sigmoid head (a ``score``
    from :func:`check_score` starting with ``"sigmoid_"``) their sigmoids."""
    return jax.nn.sigmoid(logits) if score.startswith("sigmoid_") else jax.nn.softmax(logits, axis=-1)


def class_score(logits: jax.Array, targets: jax.Array, score: str) -> jax.Array:
    """``[N]`` score of each image's target class from ``[N, K]`` logits (``score`` as :func:`check_score`
    gives it: the logit, the probability or its logarithm, of a softmax or a sigmoid head).

    The class is picked with a one-hot contraction rather than indexing: its gradient is a multiply, not a
    serial scatter (see docs/PERFORMANCE.md).
    """
    kind = score.removeprefix("sigmoid_")
    if kind == "prob":
        values = probabilities(logits, score)
    elif kind == "log_prob":
        values = jax.nn.log_sigmoid(logits) if score.startswith("sigmoid_") else jax.nn.log_softmax(logits, axis=-1)
    else:
        values = logits
    onehot = jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype)
    return (values * onehot).sum(-1)


def resolve_targets(targets: jax.Array, logits: jax.Array) -> jax.Array:
    """Replaces the ``-1`` entries of ``targets`` by the arg-max of ``logits`` (the top class)."""
    return jnp.where(targets < 0, jnp.argmax(logits, axis=-1).astype(jnp.int32), targets)


def resolve_on_clean_images(model, x, targets: jax.Array, params=None) -> jax.Array:
    """``targets`` with their ``-1`` entries (the image's top class) resolved by a forward pass of the clean
    images ``x`` of their own, made only if needed: for methods whose programs only see perturbed copies
    (noise, masks, baselines) and must still explain each image's own top class."""
    if bool(jnp.any(targets < 0)):
        targets = resolve_targets(targets, logits(model, x, params))
    return targets


def logits_fn(fwd: Callable, params, relu: Callable = jax.nn.relu) -> Callable:
    return lambda v: fwd(params, v, upto="logits", relu=relu)[0]


def input_gradient(fwd: Callable, params, x: jax.Array, targets: jax.Array, score: str,
                   relu: Callable = jax.nn.relu):
    """One forward and one backward pass: ``(∂score/∂x [N, H, W, C], score [N], resolved targets [N])``.

    ``-1`` targets become the top class of this very forward pass. Images are independent (VGG has no
    batch statistics), so the gradient of the summed score is each image's own gradient.
    """
    logits, vjp = jax.vjp(logits_fn(fwd, params, relu), x)
    t = resolve_targets(targets, logits)
    s, dlogits = jax.value_and_grad(lambda z: class_score(z, t, score).sum())(logits)
    (g,) = vjp(dlogits)
    return g, class_score(logits, t, score), t


def scores_of(fwd: Callable, params, x: jax.Array, targets: jax.Array, score: str) -> jax.Array:
    """``[N]`` scores of already-resolved targets (forward only)."""
    return class_score(fwd(params, x, upto="logits")[0], targets, score)


def fold_keys(seed: int | jax.Array, n_images: int, n_samples: int) -> jax.Array:
    """Per-(image, sample) PRNG keys ``[N, n]``: independent of batch and chunk sizes, so reproducible."""
    key = seed if isinstance(seed, jax.Array) else jax.random.key(int(seed))
    img = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_images))
    return jax.vmap(lambda k: jax.vmap(lambda j: jax.random.fold_in(k, j))(jnp.arange(n_samples)))(img)
