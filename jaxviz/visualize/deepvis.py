"""Class visualisation by regularised gradient ascent ("DeepVis").

Yosinski, Clune, Nguyen, Fuchs & Lipson, "Understanding Neural Networks Through Deep Visualization",
ICML Deep Learning Workshop 2015, arXiv:1506.06579; reference code: yosinski/deep-visualization-toolbox
(``optimize/gradient_optimizer.py``).

Starting from small noise around the mean image, each step raises the PRE-SOFTMAX score of the class
(tap ``"logits"``; the softmax can be raised by lowering the other classes instead) and then applies the
paper's regularisers:

1. clip to the valid pixel range (0..255 once the mean is added back), as the toolbox does each step;
2. gradient step ``x += step_size · ∂logit_c/∂x`` (computed on an image shifted by up to ``jitter`` pixels,
   the shift undone on the gradient);
3. L2 decay ``x *= 1 - l2_decay``;
4. every ``blur_every`` steps a Gaussian blur of width ``blur_sigma`` (truncated at 4σ, borders as
   SciPy's ``gaussian_filter`` — the toolbox's blur — in its default "reflect" mode: the edge pixel is
   repeated, ``c b a | a b c``; that is ``jnp.pad``'s "symmetric", not its "reflect").

As in the toolbox, the image returned is the BEST iterate — the one with the highest class score among all
``steps + 1`` images visited (the start, after each step, and the last), each scored after its clip — not
the last one: with a constant learning rate the score can fall again late in the ascent.

Defaults are the paper's Table 1, third row — the one used for most of its figures: decay 1e-4, blur
σ = 1.0 every 4 steps, constant learning rate 100, 1000 steps, start ``N(0, 10²)`` in mean-subtracted
space. Jitter (random translations, Mordvintsev et al. 2015, "Inceptionism") is not in that paper and is
off by default (with it, an iterate's score is that of its shifted copy).

Not implemented: the paper's other two regularisers and the toolbox's learning-rate policies — clipping
pixels with small norm (``small_norm_percentile``, the paper's θ_n_pct) or with small contribution
(``px_benefit_percentile`` / ``px_abs_benefit_percentile``, θ_c_pct), used in Table 1's other rows;
clipping small values (``small_val_percentile``); and the "progress" learning-rate policies (only the
constant rate of row 3 is offered).

Each model carries its defaults (:attr:`jaxviz.Model.profile`'s ``deepvis``): the paper's for the ImageNet
VGGs, :data:`DEMO_DEFAULTS` (chosen by experiment, see :data:`jaxviz.profile.DEEPVIS_DEMO`) for the demo
networks (``vgg_demo``, ``vgg_demo_gap``: 64 px, 10 classes), and for a model file the paper's with a step
chosen from its gradient.

All classes are optimised together as one batch (image i maximises class i, selected by a one-hot
contraction: :func:`jaxviz.optvis.objectives.class_logit`), the whole ascent is one jit-compiled
``lax.fori_loop`` (:func:`jaxviz.optvis.ascent.gradient_ascent`, the loop of the filter patterns' ascent)
on the model's forward pass (:meth:`jaxviz.Model.apply`, whose conv and pool have the
loop-friendly custom VJPs, see docs/PERFORMANCE.md) with the model's prepared kernels
(:meth:`jaxviz.Model.prepared`: flipped, Winograd and transposed dense kernels); the jitter, the step with
decay, the periodic blur and the best-iterate tracker are :mod:`jaxviz.optvis.ascent`'s hooks, the blur
:mod:`jaxviz.optvis.transforms`'. Every class gets its own PRNG stream derived from (seed, class), so an
image does not depend on which other classes share its batch.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .. import runtime
from ..errors import JaxvizError
from ..optvis import ascent, objectives
from ..optvis.param import pixel_range, pixel_space
from ..optvis.transforms import gaussian_blur, gaussian_kernel1d
from ..profile import DEEPVIS_DEMO, DEEPVIS_PAPER

__all__ = ["AUTO_STEP_GRAY_LEVELS", "DEFAULTS", "DEMO_DEFAULTS", "FLAT_STD", "class_patterns", "class_title",
           "flat_warning", "gaussian_blur", "gaussian_kernel1d", "pixel_range",
           "pixel_space"]

#: The paper's defaults (Table 1, row 3; see the module docstring) and the demo networks' (see
#: :data:`jaxviz.profile.DEEPVIS_DEMO`).
DEFAULTS, DEMO_DEFAULTS = dict(DEEPVIS_PAPER), dict(DEEPVIS_DEMO)


def _build(fwd, blur_every: int, blur_sigma: float, jitter: int, mode: str, channels: int):
    """The ascent program on ``fwd`` (:func:`jaxviz.runtime.compiled`'s forward pass): steps ``start`` …
    ``stop - 1`` of :func:`jaxviz.optvis.ascent.gradient_ascent` with DeepVis's hooks and best-iterate tracker."""
    lo, hi = (jnp.asarray(v) for v in pixel_range(mode, channels))  # valid pixels in model space
    centre, scale = (jnp.asarray(v) for v in pixel_space(mode, channels))

    def run(params, x, best, best_score, onehot, keys, start, stop, step_size, l2_decay):
        def scores(v):  # [N]: each image's own class logit (one-hot contraction)
            return objectives.class_logit(fwd, params, v, onehot)

        def score_and_grad(v):
            s, vjp = jax.vjp(scores, v)
            return s, vjp(jnp.ones_like(s))[0]

        blur = None
        if blur_every and blur_sigma > 0:
            blur = ascent.every(blur_every, lambda v: gaussian_blur(v, blur_sigma))
        x, (best, best_score) = ascent.gradient_ascent(
            ascent.jittered(score_and_grad, keys, jitter), ascent.decayed_step(step_size, l2_decay, centre, scale),
            x, start, stop, before=lambda v: jnp.clip(v, lo, hi), after=blur, best=(best, best_score))
        return x, best, best_score

    return run


def _compiled(model, blur_every: int, blur_sigma: float, jitter: int):
    key = (blur_every, blur_sigma, jitter, model.preprocess, model.input_channels)
    return runtime.compiled(model, "deepvis", key, lambda fwd: _build(fwd, *key))


#: A model file's default step: the first step moves pixels by this many gray levels on average (the demo
#: networks' tuned step moves them by ~1.5–5, see :data:`DEMO_DEFAULTS`).
AUTO_STEP_GRAY_LEVELS = 2.0


def _auto_step_size(model, x, onehot, scale) -> float:
    """The step that moves pixels by :data:`AUTO_STEP_GRAY_LEVELS` on average at ``x``: a step ``s`` moves a
    pixel by ``s · |∂logit/∂pixel|`` gray levels (see :func:`pixel_space`). The paper's 100 where the
    gradient is zero."""
    def score(params, v):
        return jnp.sum(model.apply(params, v, upto="logits")[0] * onehot)

    g = jax.jit(jax.grad(score, argnums=1))(model.params, x)
    per_pixel = float(jnp.mean(jnp.abs(g * jnp.asarray(scale))))  # ∂/∂pixel = ∂/∂x · (∂x/∂pixel = scale)
    return AUTO_STEP_GRAY_LEVELS / per_pixel if per_pixel > 0 else DEFAULTS["step_size"]


def class_patterns(model, classes: int | Sequence[int], size: int | tuple[int, int] | None = None,
                   steps: int | None = None, step_size: float | None = None, l2_decay: float | None = None,
                   blur_every: int | None = None, blur_sigma: float | None = None, jitter: int | None = None,
                   seed: int = 0, init_std: float | None = None, progress: bool = True, raw: bool = False,
                   progress_every: int = 25) -> np.ndarray:
    """Images that maximise the pre-softmax score of each class, with Yosinski et al.'s regularisers.

    Every optimisation parameter left at ``None`` takes the model's default (``model.profile.deepvis``: the
    paper's values below, or :data:`DEMO_DEFAULTS` for the demo networks).

    Args:
      model: a :class:`jaxviz.Model` with its classifier (``include_top=True``).
      classes: class index or indices (``0 <= c < model.num_classes``); each gets one image.
      size: image side, or ``(height, width)``; default the model's input size (224×224 for VGG16; a flatten
        head needs it).
      steps: gradient steps (paper: 1000).
      step_size: constant learning rate on the raw gradient (paper: 100), in gray levels of 0..255 pixels:
        scaled to the model's input range (:func:`pixel_space`), so that the same settings take the same
        steps on models fed Caffe's BGR, [0, 1], [-1, 1] or 0..255. A model file's default is chosen from its
        gradient (:data:`AUTO_STEP_GRAY_LEVELS`: the paper's 100 is calibrated to VGG's gradients).
      l2_decay: ``x *= 1 - l2_decay`` after each step (paper: 1e-4).
      blur_every: blur every this many steps; 0 disables (paper: 4).
      blur_sigma: Gaussian σ in pixels (paper: 1.0); 0 disables.
      jitter: random shift of up to this many pixels per step and image; 0 disables (paper: 0).
      seed: PRNG seed; the start image of class ``c`` depends only on (seed, c).
      init_std: standard deviation of the start noise around the mean image in gray levels (toolbox: 10).
      progress: show a tqdm bar over the steps.
      raw: return the float images in model space (BGR, mean-subtracted) instead of uint8 RGB.
      progress_every: steps per call of the compiled loop when ``progress`` is on (the bar updates then).

    Returns:
      The best iterate of each class (the highest class logit of the ``steps + 1`` images visited, as the
      toolbox saves): ``[C, H, W, channels]`` uint8 RGB (or gray) images (the mean added back, clipped to
      0..255), or with ``raw=True`` float32 model-space images ready for :meth:`jaxviz.Model.apply`. See
      :func:`flat_warning` for images that stayed flat.

    Raises:
      JaxvizError: no classifier, a class out of range, or a bad size.
    """
    if not model.include_top:
        raise JaxvizError("class visualisation needs the classifier: load the model with include_top=True")
    given = dict(steps=steps, step_size=step_size, l2_decay=l2_decay, blur_every=blur_every, blur_sigma=blur_sigma,
                 jitter=jitter, init_std=init_std)
    opts = {k: (v if given[k] is None else given[k]) for k, v in model.profile.deepvis.items()}
    steps, step_size, l2_decay, blur_every, blur_sigma, jitter, init_std = (
        opts[k] for k in ("steps", "step_size", "l2_decay", "blur_every", "blur_sigma", "jitter", "init_std"))
    n_cls = model.num_classes
    cls = [operator.index(classes)] if np.ndim(classes) == 0 else [operator.index(c) for c in classes]
    if not cls:
        raise JaxvizError("no class given; name at least one class index")
    bad = [c for c in cls if not 0 <= c < n_cls]
    if bad:
        raise JaxvizError(f"class {bad[0]} out of range: {model.name} has {n_cls} classes (0..{n_cls - 1})")
    if steps < 0 or blur_every < 0 or jitter < 0:
        raise JaxvizError("steps, blur_every and jitter must be non-negative")
    model.require_spatial("class visualisation")
    size = size or model.input_hw
    h, w = (int(size), int(size)) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise JaxvizError(f"size must be a positive number of pixels, got {size}")
    channels = model.input_channels
    centre, scale = pixel_space(model.preprocess, channels)

    base = jax.random.PRNGKey(seed)
    keys = jnp.stack([jax.random.fold_in(base, c) for c in cls])
    x = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), (h, w, channels)))(keys)
    x = model.check_input(centre + x * (init_std * scale))  # raises for a size the model cannot take
    onehot = jax.nn.one_hot(jnp.asarray(cls), n_cls, dtype=jnp.float32)
    if step_size is None:
        step_size = _auto_step_size(model, x, onehot, scale)

    seg = max(1, min(steps, progress_every)) if progress else max(1, steps)
    bar = None
    if progress:
        bar = tqdm(total=steps, desc=f"deepvis ({len(cls)} class{'es' if len(cls) > 1 else ''})", leave=False)
    # The program gets the model's prepared kernels (input-gradient, and on CPUs Winograd and transposed
    # dense kernels, computed once per weights): XLA:CPU would otherwise flip every kernel at each step and
    # compute fc1's input gradient for several classes through its slow g @ Wᵀ (see jaxviz.ops.dense).
    fn = _compiled(model, int(blur_every), float(blur_sigma), int(jitter))
    best, best_score = x, jnp.full((len(cls),), -jnp.inf, jnp.float32)
    lr, decay = jnp.float32(step_size), jnp.float32(l2_decay)
    try:
        done = 0
        while done < steps:
            n = min(seg, steps - done)
            x, best, best_score = fn(model.params, x, best, best_score, onehot, keys, jnp.int32(done),
                                     jnp.int32(done + n), lr, decay)
            done += n
            if bar is not None:
                x.block_until_ready()
                bar.update(n)
        # The last image is scored too (the toolbox's final iteration: scored, not updated); the step this
        # extra pass of the same program takes is thrown away.
        _, best, best_score = fn(model.params, x, best, best_score, onehot, keys, jnp.int32(steps),
                                 jnp.int32(steps + 1), lr, decay)
    finally:
        if bar is not None:
            bar.close()
    lo, hi = pixel_range(model.preprocess, channels)
    x = np.clip(np.asarray(best), lo, hi)
    if raw:
        return x
    return np.clip(np.rint(np.asarray(model.undo_preprocess(x))), 0, 255).astype(np.uint8)


#: Below this standard deviation (gray levels of 0..255) a class image counts as flat.
FLAT_STD = 2.0


def flat_warning(classes: Sequence[int], images) -> str | None:
    """One line naming the classes whose image (uint8, :func:`class_patterns`) stayed flat, with the fix;
    ``None`` when every image has structure (some channel's standard deviation over the pixels ≥
    :data:`FLAT_STD` gray levels)."""
    stds = [float(np.asarray(im, np.float32).reshape(-1, np.shape(im)[-1] if np.ndim(im) == 3 else 1)
                  .std(axis=0).max()) for im in images]  # flat in every channel
    flat = [(int(c), sd) for c, sd in zip(classes, stds) if sd < FLAT_STD]
    if not flat:
        return None
    which = ", ".join(f"{c} (std {sd:.2f})" for c, sd in flat)
    return (f"the class image{'s' if len(flat) > 1 else ''} of class {which} stayed flat (pixel std under "
            f"{FLAT_STD:g} of 255): raise the step size or the steps, or check the preprocessing mode")


def class_title(model, c: int) -> str:
    """A class's name: the model's own class names where its architecture names them (the demo networks'
    scene classes: ``"star"``) or it has ImageNet's 1000 classes (``"tabby"``), ``"class N"`` otherwise."""
    c = int(c)
    arch = model.arch
    if (arch.class_names is not None or arch.num_classes == 1000) and 0 <= c < arch.num_classes:
        return str(model.class_names[c])
    return f"class {c}"
