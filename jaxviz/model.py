"""The model object: a VGG definition, its params, and jit-compiled, cached forward entry points.

``jaxviz.load("vgg16")`` gives a :class:`Model`. Every method in jaxviz is built on
:meth:`Model.apply` — one pure function ``apply(params, x, upto=None, taps=(), relu=relu)`` — with the
params passed as a traced argument (never closed over, so compiled programs stay small and a second model
with the same shapes reuses them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import vgg
from .errors import JaxvizError, LayerError


class Model:
    """A VGG network with its weights, in Keras's terms (layer names, ``summary``, ``predict``).

    Attributes:
      arch: the :class:`jaxviz.vgg.Arch` (``arch.name`` is "vgg16", "vgg19", …).
      include_top: whether the classifier head is present.
      params: ``{layer: {"kernel": HWIO or [in, out], "bias": [out]}}`` of ``jax.Array`` float32.
      module: the Flax :class:`jaxviz.vgg.VGG` module.
      source: where the weights came from (a path, "imagenet:<path>", "random:SEED").
    """

    def __init__(self, arch: str | vgg.Arch, params: dict, include_top: bool = True, source: str = ""):
        self.arch = vgg.get_arch(arch)
        self.include_top = include_top
        self.module = vgg.make_module(self.arch, include_top)
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        self.source = source
        self._table = vgg.layer_table(self.arch, include_top)
        self._index = {r.name: i for i, r in enumerate(self._table)}
        if include_top:
            self._index["logits"] = self._index["predictions"]
        # One jitted function per model; jax caches its executables per (layers, input shape, dtype).
        self._features_jit = jax.jit(self._features_fn, static_argnames=("layers",))
        self._logits_jit = jax.jit(lambda params, prepared, x: self.apply(params, x, upto="logits",
                                                                          flipped=prepared)[0])

    # --- the pure forward pass -------------------------------------------------------------------------

    def apply(self, params: dict, x: jax.Array, upto: str | None = None, taps: Sequence[str] = (),
              relu: Callable = jax.nn.relu, perturb: Mapping[str, jax.Array] | None = None,
              flipped: Mapping | None = None):
        """``forward(params, x, upto, taps, relu, perturb) -> (output, {tap: array})``; pure, jit/vmap-able.

        Args:
          params: ``{layer: {"kernel", "bias"}}`` (e.g. ``model.params``).
          x: ``[N, H, W, 3]`` preprocessed images (see :func:`jaxviz.preprocess_input`).
          upto: stop after this layer; nothing after it is computed.
          taps: layers whose outputs are also returned; ``"logits"`` is the pre-softmax score.
          relu: the activation, swappable for a custom-VJP one (guided backprop, deconvnet).
          perturb: ``{layer: array}`` added to those layers' outputs; differentiate w.r.t. a zero
            perturbation to get the gradient w.r.t. a layer's output (Grad-CAM).
          flipped: :func:`jaxviz.vgg.flipped_kernels` of ``params``, computed once outside a loop or a
            cache, so the input-gradient convs do not flip every kernel again (same values, less work).
        """
        taps = tuple(taps)
        variables = {"params": params} if flipped is None else {"params": params, "flipped": flipped}
        out, tapped = self.module.apply(variables, x, upto=upto, taps=taps, relu=relu, perturb=perturb)
        if "input_layer" in taps:
            tapped["input_layer"] = x
        return out, tapped

    # --- layer names -----------------------------------------------------------------------------------

    @property
    def layer_names(self) -> list[str]:
        """Keras's ``[layer.name for layer in model.layers]``: ``input_layer``, ``block1_conv1``, …"""
        return [r.name for r in self._table]

    @property
    def conv_layer_names(self) -> list[str]:
        return [r.name for r in self._table if r.kind == "Conv2D"]

    @property
    def last_conv_layer(self) -> str:
        return self.conv_layer_names[-1]

    def check_layers(self, layers: str | Iterable[str]) -> tuple[str, ...]:
        """Validates layer names; returns them as a tuple in network order, without repeats."""
        names = (layers,) if isinstance(layers, str) else tuple(layers)
        if not names:
            raise LayerError("no layer given; valid layers: " + ", ".join(self.layer_names))
        for n in names:
            if n not in self._index:
                raise LayerError(
                    f"unknown layer {n!r} for {self.arch.name}"
                    f"{'' if self.include_top else ' without top'}; valid layers: {', '.join(self.layer_names)}"
                )
        return tuple(sorted(set(names), key=lambda n: (self._index[n], n)))

    def deepest(self, layers: Iterable[str]) -> str:
        """The layer among ``layers`` that comes last in the network (where a truncated pass stops)."""
        return max(layers, key=lambda n: (self._index[n], n == "predictions"))

    def channels(self, layer: str) -> int:
        self.check_layers(layer)
        return self._table[self._index[layer]].output_shape[-1]

    # --- Keras-like entry points -----------------------------------------------------------------------

    def check_input(self, x) -> jax.Array:
        """Validates a batch of preprocessed images ``[N, H, W, 3]`` and returns it as float32."""
        shape = tuple(np.shape(x))
        if len(shape) != 4 or shape[-1] != 3:
            raise JaxvizError(
                f"expected a batch of images [N, H, W, 3], got shape {shape}; "
                "add a batch axis with x[None] for a single image"
            )
        h, w = shape[1:3]
        m = self.arch.min_size
        if h < m or w < m:
            raise JaxvizError(f"{self.arch.name} needs inputs of at least {m}×{m} pixels, got {h}×{w}")
        if self.include_top and self.arch.head == "flatten":
            s = self.arch.default_size
            if (h, w) != (s, s):
                raise JaxvizError(
                    f"{self.arch.name} with its top needs {s}×{s} inputs, got {h}×{w}; resize the image "
                    f"(load_image(path, target_size=({s}, {s}))) or load the model with include_top=False"
                )
        return jnp.asarray(x, jnp.float32)

    def _features_fn(self, params, prepared, x, layers):
        _, tapped = self.apply(params, x, upto=self.deepest(layers), taps=layers, flipped=prepared)
        return tapped

    def _prepared(self):
        """The "flipped" collection of ``self.params`` (Winograd kernels on CPUs), computed once per params."""
        from .attribution import _core

        return _core.flipped_kernels(self, self.params)

    def features(self, x, layers: str | Iterable[str]) -> dict[str, jax.Array]:
        """Outputs of ``layers`` for ``x`` from ONE forward pass that stops at the deepest of them.

        Args:
          x: ``[N, H, W, 3]`` preprocessed images.
          layers: a layer name or names (see :attr:`layer_names`; ``"logits"`` = pre-softmax scores).

        Returns:
          ``{layer: array}``; conv/pool outputs ``[N, h, w, C]`` (post-ReLU, as Keras reports them).
          Compiled once per (layers, input shape); a second call with the same shapes does not recompile.
        """
        layers = self.check_layers(layers)
        x = self.check_input(x)
        if "predictions" not in layers:
            return self._features_jit(self.params, self._prepared(), x, layers=layers)
        # The softmax runs as its own small program (see predict); the pass itself stops at the logits.
        inner = tuple(dict.fromkeys("logits" if name == "predictions" else name for name in layers))
        out = self._features_jit(self.params, self._prepared(), x, layers=inner)
        out["predictions"] = _softmax(out["logits"])
        return {name: out[name] for name in layers}

    def predict(self, x, batch_size: int = 32) -> np.ndarray:
        """Softmax probabilities ``[N, num_classes]``, computed ``batch_size`` images at a time like Keras."""
        if not self.include_top:
            raise JaxvizError("predict needs the classifier: load the model with include_top=True")
        x = self.check_input(x)
        # Softmax in its own small program: fused into the network's program it makes XLA:CPU's whole
        # VGG16 pass ~1.5x slower (measured, batch 8 at 224 px); the numbers are the same.
        prepared = self._prepared()
        outs = [np.asarray(_softmax(self._logits_jit(self.params, prepared, x[i: i + batch_size])))
                for i in range(0, x.shape[0], batch_size)]
        return np.concatenate(outs, axis=0)

    @property
    def class_names(self) -> list[str]:
        """The output classes' names: ImageNet's (Keras's index) for 1000 classes, else the arch's own."""
        a = self.arch
        if a.class_names is not None:
            return list(a.class_names)
        if a.num_classes == 1000:
            from .imagenet import class_index

            return [name for _, name in class_index()]
        return [f"class_{i}" for i in range(a.num_classes)]

    def decode_predictions(self, probs, top: int = 5) -> list[list[tuple[str, str, float]]]:
        """:func:`jaxviz.decode_predictions` for this model's classes: per image ``top`` ``(id, name, score)``.

        The id is the ImageNet wnid for ImageNet models (exactly Keras's result), else the class index.
        """
        from .imagenet import decode_predictions

        if self.arch.class_names is None and self.arch.num_classes == 1000:
            return decode_predictions(probs, top)
        preds = np.asarray(probs)
        if preds.ndim != 2 or preds.shape[1] != self.arch.num_classes:
            raise JaxvizError(f"expected predictions of shape [N, {self.arch.num_classes}], got {preds.shape}")
        names = self.class_names
        return [[(str(int(i)), names[i], float(p[i])) for i in np.argsort(-p, kind="stable")[:top]] for p in preds]

    def __call__(self, x) -> jax.Array:
        """Output of the whole model (probabilities with the top, block5_pool features without)."""
        return self.features(x, self.layer_names[-1])[self.layer_names[-1]]

    # --- description -----------------------------------------------------------------------------------

    @property
    def count_params(self) -> int:
        return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(self.params))

    def summary(self, input_shape=None, print_fn: Callable[[str], None] = print) -> str:
        """Prints (and returns) Keras's model table: layer (type), output shape, params, and totals."""
        text = format_summary(self.arch, self.include_top, input_shape)
        print_fn(text)
        return text

    def __repr__(self) -> str:
        top = "" if self.include_top else ", include_top=False"
        return f"Model({self.arch.name!r}{top}, params={self.count_params:,}, source={self.source!r})"


@jax.jit
def _softmax(logits):
    return jax.nn.softmax(logits, axis=-1)


def format_summary(arch: str | vgg.Arch, include_top: bool = True, input_shape=None) -> str:
    """Keras's ``model.summary()`` table for ``arch`` as text."""
    a = vgg.get_arch(arch)
    rows = vgg.layer_table(a, include_top, input_shape)
    cells = [(f"{r.name} ({r.kind})", str((None, *r.output_shape)), f"{r.params:,}") for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) + 2 for i, h in enumerate(("Layer (type)",
                                                                                  "Output Shape", "Param #"))]
    total = sum(r.params for r in rows)
    size_mb = total * 4 / 2**20
    line = "━" * sum(widths)
    header = "".join(h.ljust(w) for h, w in zip(("Layer (type)", "Output Shape", "Param #"), widths))
    body = [f'Model: "{a.name}"', line, header, line]
    body += ["".join(c.ljust(w) for c, w in zip(cell, widths)) for cell in cells]
    body += [line, f" Total params: {total:,} ({size_mb:.2f} MB)", f" Trainable params: {total:,} ({size_mb:.2f} MB)",
             " Non-trainable params: 0 (0.00 B)"]
    return "\n".join(body)


def load(arch: str = "vgg16", weights: str | None = "imagenet", include_top: bool = True) -> Model:
    """Builds a model and loads its weights.

    Args:
      arch: "vgg16", "vgg19" (or "vgg_tiny", a few-channel VGG16 for tests).
      weights: "imagenet" (Keras's files: jaxviz cache, then Keras cache, then download; see
        :mod:`jaxviz.weights`), a path to a Keras ``.h5`` / ``.weights.h5`` or a converted ``.npz`` file,
        or ``None`` / ``"random:SEED"`` for deterministic He-initialised weights (``None`` = seed 0).
      include_top: include ``flatten``, ``fc1``, ``fc2`` and ``predictions``.

    Returns:
      A :class:`Model`.
    """
    from . import weights as weights_lib

    a = vgg.get_arch(arch)
    params, source = weights_lib.load_params(a, weights, include_top)
    return Model(a, params, include_top, source)
