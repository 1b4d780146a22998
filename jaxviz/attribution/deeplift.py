"""DeepLIFT with the Rescale rule: contributions of each input's difference from a reference input.

Shrikumar, Greenside & Kundaje, "Learning Important Features Through Propagating Activation Differences",
ICML 2017, arXiv:1704.02685.

The network runs on the image ``x`` and the reference ``x₀`` together. Multipliers ``m = Δout / Δin`` are
propagated backwards like gradients (the paper's chain rule for multipliers, section 3.3), with:

- linear layers (convolutions, dense layers, biases): their weights, as the gradient (section 3.5.1);
- ReLU, the Rescale rule (section 3.5.2): ``m = (ReLU(z) − ReLU(z₀)) / (z − z₀)``, and the ReLU's gradient
  where ``|z − z₀| < 1e-10`` (as Captum);
- max-pooling: the gradient (routed to the arg-max of each window), the DeepLIFT authors' default
  (``MaxPoolDeepLiftMode.gradient`` in their code). Captum's ``DeepLift`` uses another rule for max-pooling
  (the change of the window's maximum sent to the arg-max of the input or of the reference), so the two agree
  on networks without max-pooling, where each window's arg-max is the same for ``x`` and ``x₀``, and where
  the reference's window is constant and its maximum grew (e.g. the zero reference, on most windows).

    R = (x − x₀) ⊙ m_{x→S_t},        Σ R = S_t(x) − S_t(x₀)   (summation-to-delta, exact for ReLU/linear nets)

The score is the logit (the multipliers of a softmax need the paper's special treatment). One forward pass of
``[x; x₀]`` and one backward pass. Signed.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import runtime
from ..errors import JaxvizError

EPS = 1e-10


@jax.custom_vjp
def rescale_relu(z):
    """The ReLU, whose backward pass applies the Rescale rule between the two halves of the batch
    (image half first, reference half second)."""
    return jax.nn.relu(z)


def _fwd(z):
    return jax.nn.relu(z), z


def _bwd(z, g):
    zx, z0 = jnp.split(z, 2)
    dz = zx - z0
    safe = jnp.where(jnp.abs(dz) < EPS, 1, dz)
    m = jnp.where(jnp.abs(dz) < EPS, (zx > 0).astype(z.dtype), (jax.nn.relu(zx) - jax.nn.relu(z0)) / safe)
    return (g * jnp.concatenate([m, m]),)


rescale_relu.defvjp(_fwd, _bwd)


def deeplift(model, x, target: int | Sequence[int] | None = None, *, baseline=None, score: str = "logit",
             reduce: str | None = "sum", params=None) -> jax.Array:
    """Shrikumar et al.'s DeepLIFT, Rescale rule (Captum's ``DeepLift`` on ReLU/linear networks).

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

    def build(fwd):
        def run(params, x, targets, base):
            n = x.shape[0]
            both = jnp.concatenate([x, base])
            logits, vjp = jax.vjp(lambda v: fwd(params, v, upto="logits", relu=rescale_relu)[0], both)
            t = runtime.resolve(targets, logits[:n])
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
