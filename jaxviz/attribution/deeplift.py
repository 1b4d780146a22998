"""DeepLIFT with the Rescale rule: contributions of each input's difference from a reference input.

Shrikumar, Greenside & Kundaje, "Learning Important Features Through Propagating Activation Differences",
ICML 2017, arXiv:1704.02685.

The network runs on the image ``x`` and the reference ``x₀`` together. Multipliers ``m = Δout / Δin`` are
propagated backwards like gradients (the paper's chain rule for multipliers, section 3.3), with:

- linear layers (convolutions, dense layers, biases, batch normalisation, average pooling, additions): their
  weights, as the gradient (section 3.5.1);
- every elementwise nonlinearity ``f`` (ReLU, clipped and leaky ReLU, ReLU6, ELU, SELU, PReLU, tanh, sigmoid,
  hard sigmoid, softplus, softsign, swish/SiLU, hard swish, GELU, mish, exp, and a ``keras.ops`` function of one
  tensor and numbers such as ``x ** 2``), taken whole: the Rescale rule (section 3.5.2),
  ``m = (f(z) − f(z₀)) / (z − z₀)``, and the gradient ``f′(z)`` where ``|z − z₀| < 1e-10``, as Captum. Captum's
  ``DeepLift`` has this rule for ReLU, ELU, LeakyReLU, sigmoid, tanh and softplus modules, and the gradient for
  other activations (ReLU6, SiLU, GELU, …);
- max-pooling (``MaxPooling2D``, ``GlobalMaxPooling2D``): the gradient (routed to the arg-max of each window),
  the DeepLIFT authors' default (``MaxPoolDeepLiftMode.gradient`` in their code). Captum's ``DeepLift`` uses
  another rule for max-pooling (the change of the window's maximum sent to the arg-max of the input or of the
  reference), so the two agree on networks without max-pooling, where each window's arg-max is the same for
  ``x`` and ``x₀``, and where the reference's window is constant and its maximum grew (e.g. the zero
  reference, on most windows);
- layers without a rule — a product, quotient, maximum or minimum of two tensors (a gate such as
  ``Multiply``), a softmax or layer normalisation inside the network: the gradient passes through them, as
  Captum passes it through every operation it has no rule for, and :func:`deeplift` says so in one warning
  naming them. Summation-to-delta does not hold through them. (Captum's rule for an ``nn.Softmax`` module, the
  Rescale rule minus its mean, is not the paper's; jaxviz does not use it.)

    R = (x − x₀) ⊙ m_{x→S_t},        Σ R = S_t(x) − S_t(x₀)   (summation-to-delta)

Summation-to-delta holds on every network made of linear layers and elementwise nonlinearities, whichever
the activations; max-pooling keeps it where each window's arg-max is the same for ``x`` and ``x₀``.

The score is the logit (the multipliers of a softmax need the paper's special treatment). One forward pass of
``[x; x₀]`` and one backward pass. Signed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import runtime
from ..errors import JaxvizError
from ..ops import ElementwiseRule

#: Display policy: the map's sign matters (negative = evidence against the class), so it is shown
#: as its positive part.
SIGNED = True

EPS = 1e-10


class Rescale(ElementwiseRule):
    """The Rescale rule between the two halves of the batch (image half first, reference half second): the
    forward value is ``f(z)``; the backward pass multiplies by ``(f(z) − f(z₀)) / (z − z₀)``, or ``f′(z)`` where
    ``|z − z₀| < EPS``, the same multiplier for both halves."""

    def apply(self, f: Callable, z: jax.Array) -> jax.Array:
        y = f(z)
        zx, z0 = jnp.split(z, 2)
        yx, y0 = jnp.split(y, 2)
        dz = zx - z0
        small = jnp.abs(dz) < EPS
        slope = jax.jvp(f, (zx,), (jnp.ones_like(zx),))[1]  # f′(z): f is elementwise
        m = jnp.where(small, slope, (yx - y0) / jnp.where(small, 1, dz))
        m = jax.lax.stop_gradient(jnp.concatenate([m, m]))
        # value f(z); derivative m (z − stop_gradient(z) is 0, with derivative 1)
        return jax.lax.stop_gradient(y) + m * (z - jax.lax.stop_gradient(z))


#: The forward pass's ReLU for DeepLIFT: applies :class:`Rescale` to every elementwise nonlinearity.
rescale_relu = Rescale()

#: Kinds whose two or more tensor inputs meet in a nonlinear way, with no DeepLIFT rule.
_GATES = ("Multiply", "Maximum", "Minimum", "ops.Multiply", "ops.Divide", "ops.TrueDivide", "ops.Maximum",
          "ops.Minimum", "ops.Power")


def layers_without_rule(graph) -> list[str]:
    """``["name (what)", …]``: the layers up to the logits through which :func:`deeplift` passes the gradient
    for want of a rule (see the module docstring)."""
    if graph is None:
        return []
    logits_layer, pre = graph.logits
    out = []
    for name in sorted(graph.ancestors(["logits"]), key=graph.index.__getitem__):
        layer = graph.by_name[name]
        kind, cfg = layer.kind, layer.cfg
        tensors = len([a for a in cfg.get("args", []) if isinstance(a, dict)]) if kind.startswith("ops.") \
            else len(layer.inputs)
        act = cfg.get("activation")
        if kind in _GATES and tensors > 1:
            out.append(f"{name} ({kind.removeprefix('ops.')} of {tensors} tensors)")
        elif kind in ("Softmax", "ops.Softmax", "LayerNormalization"):
            out.append(f"{name} ({kind.removeprefix('ops.')})")
        elif act in ("softmax", "log_softmax") and not (name == logits_layer and pre):
            out.append(f"{name} ({act})")
    return out


def deeplift(model, x, target: int | Sequence[int] | None = None, *, baseline=None, score: str = "logit",
             reduce: str | None = "sum", params=None) -> jax.Array:
    """Shrikumar et al.'s DeepLIFT, Rescale rule at every elementwise nonlinearity (see the module docstring for
    what equals Captum's ``DeepLift``).

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class), a class index, or one per image.
      baseline: the reference input: a number, one ``[H, W, 3]`` image or one per image ``[N, H, W, 3]``, in
        the model's input space; default 0 (Captum's default; for mean-subtracted inputs, the mean colour).
      score: ``"logit"`` (the only one: see the module docstring).
      reduce: channel reduction; default ``"sum"``; ``None`` keeps ``[N, H, W, 3]`` (Captum's layout,
        channels last).
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32, signed (``[N, H, W, 3]`` for ``reduce=None``).
    """
    runtime.check_model(model, "deeplift")
    score = runtime.check_score(model, score)
    if not score.endswith("logit"):
        raise JaxvizError(f"deeplift explains the logit (score='logit'), got score={score!r}")
    reduce = runtime.check_reduce(reduce)
    x = runtime.check_input(model, x)
    targets = runtime.check_targets(model, target, x.shape[0])
    base = _check_baseline(baseline, x)
    gates = layers_without_rule(model.graph)
    if gates:
        warnings.warn(f"deeplift: no DeepLIFT rule for {', '.join(gates)}; the gradient passes through "
                      f"{'it' if len(gates) == 1 else 'them'} (as in Captum's DeepLift)", stacklevel=2)

    def build(fwd):
        def run(params, x, targets, base):
            n = x.shape[0]
            both = jnp.concatenate([x, base])
            logits, vjp = jax.vjp(lambda v: fwd(params, v, upto="logits", relu=rescale_relu)[0], both)
            t = runtime.resolve_targets(targets, logits[:n])
            dlogits = jax.grad(lambda z: runtime.class_score(z, t, score).sum())(logits[:n])
            (g,) = vjp(jnp.concatenate([dlogits, jnp.zeros_like(dlogits)]))
            return (x - base) * g[:n]

        return run

    fn = runtime.compiled(model, "deeplift", (score,), build)
    return runtime.finish(fn(runtime.params_of(model, params), x, targets, base), reduce)


def _check_baseline(baseline, x) -> jax.Array:
    if baseline is None:
        return jnp.zeros_like(x)
    b = np.asarray(baseline, np.float32)
    if not np.isfinite(b).all():
        raise JaxvizError("the baseline holds NaN/inf values; pass a finite preprocessed image or number")
    try:
        return jnp.asarray(np.broadcast_to(b, x.shape))
    except ValueError:
        raise JaxvizError(f"baseline must be a number, [{', '.join(map(str, x.shape[1:]))}] or "
                          f"[{', '.join(map(str, x.shape))}], got shape {b.shape}") from None
