"""The model object: a layer graph, its params, its ops, and jit-compiled, cached forward entry points.

``jaxviz.load("vgg16")`` gives a :class:`Model`. Every method in jaxviz is built on
:meth:`Model.apply` — the pure forward pass of :func:`jaxviz.graph.forward`,
``apply(params, x, upto=None, taps=(), relu=relu, perturb=None)`` — with the params passed as a traced
argument (never closed over, so compiled programs stay small and a second model with the same shapes
reuses them). The model owns the kernels its ops derive from the params (:meth:`Model.prepared`, computed
once per set of weights).

A :class:`Model` implements :class:`jaxviz.interface.ModelInterface` for what a front end produces (a
:class:`jaxviz.interface.FrontEnd`: the VGG tables' :func:`jaxviz.frontends.vgg.front_end`, a model file's graph).
Its helpers live by job: :mod:`jaxviz.describe` (layer tables and summaries from shapes),
:mod:`jaxviz.input_rules` (which batches it takes), :mod:`jaxviz.frontends.files` (reading whole-model files).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import graph as graph_lib
from . import input_rules, preprocessing, runtime, xla_cpu
from . import ops as ops_lib
from . import profile as profile_lib
from .demo import demo_weights_path, load_demo_params
from .describe import default_cam_layer, format_table, graph_layer_table, model_info
from .errors import JaxvizError, LayerError, WeightsError, printable
from .frontends import files as model_files
from .frontends import flax_export, vgg
from .frontends.files import (
    MAX_ACTIVATION,
    check_activation_sizes,
    file_weights_error,
    file_weights_seed,
    is_model_file,
    read_model_file,
    seeded_params,
)
from .frontends.vgg import format_summary
from .imagenet import class_index, decode_predictions
from .interface import FrontEnd, LayerInfo, ModelInfo
from .weights import load_params

# Names other modules import from here: the model's helpers split into front-end and description modules.
__all__ = ["CONV_KINDS", "HEAD_KINDS", "MAX_ACTIVATION", "PLUMBING_KINDS", "Model", "ModelInfo", "file_weights_error",
           "format_summary", "format_table", "graph_layer_table", "load", "read_model_file", "seeded_params"]
_is_model_file = is_model_file
_file_weights_seed = file_weights_seed

#: Layer kinds whose output has channels a filter pattern or a feature map can show.
CONV_KINDS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose")
#: Layer kinds that end the spatial part of a classifier: Grad-CAM's default layer comes before them.
HEAD_KINDS = ("GlobalAveragePooling2D", "GlobalAvgPool2D", "GlobalMaxPooling2D", "GlobalMaxPool2D", "Flatten",
              "Reshape")
#: Layer kinds that only move or pad a map (an ONNX file's layout and window padding): never Grad-CAM's default.
PLUMBING_KINDS = ("Pad", "ZeroPadding2D", "Permute", "Reshape")


class Model:
    """A network with its weights, in Keras's terms (layer names, ``summary``, ``predict``).

    Attributes:
      graph: the :class:`jaxviz.graph.Graph` (layers, kinds, configs, inputs).
      arch: the front end's description: the :class:`jaxviz.frontends.vgg.Arch` of a VGG-table model, else a
        :class:`jaxviz.interface.ModelInfo` with the same fields (methods ask the model's own members:
        :attr:`name`, :attr:`num_classes`, :attr:`input_hw`, :attr:`head`, …).
      include_top: whether the classifier head is present.
      params: ``{layer: {"kernel": HWIO or [in, out], "bias": [out], …}}`` of ``jax.Array`` float32.
      ops: how layers compute (:class:`jaxviz.ops.Ops`: fast on CPUs by default, or exact).
      module: ``graph`` and ``ops`` bound (:class:`jaxviz.graph.Network`), Flax-style ``apply``.
      source: where the weights came from (a path, "imagenet:<path>", "random:SEED").
      preprocess: the input preprocessing the model expects ("caffe", "tf", "torch", "rescale", "none").
      profile: the architecture's defaults (:class:`jaxviz.profile.Profile`: default image, score, DeepVis
        and pattern step sizes).
    """

    def __init__(self, arch, params: dict, include_top: bool = True, source: str = "",
                 ops: str | ops_lib.Ops | None = None, preprocess: str = "caffe",
                 profile: profile_lib.Profile | None = None):
        """A model from a front end's output (:class:`jaxviz.interface.FrontEnd`), a layer graph (a graph
        of its own: described from its shapes, ``file`` profile) or a VGG table row or its name (built by
        :func:`jaxviz.frontends.vgg.front_end`); ``profile`` replaces the front end's."""
        if isinstance(arch, graph_lib.Graph):
            front = model_files.front_end(arch)
        elif isinstance(arch, FrontEnd):
            front = arch
        else:
            front = vgg.front_end(arch, include_top)
        self.graph = front.graph
        self.include_top = include_top
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        self.arch = model_info(self.graph, self.params) if front.info is None else front.info
        self.ops = ops_lib.default_ops(ops)
        self.module = graph_lib.Network(self.graph, self.ops)
        self.source = source
        self.preprocess = preprocessing.check_channels(preprocess, self.input_channels)
        self.profile = front.profile if profile is None else profile
        self._table = front.table
        self._prepared_cache: tuple | None = None
        self._tables: dict = {}

    # --- the pure forward pass -------------------------------------------------------------------------

    def apply(self, params: dict, x: jax.Array, upto: str | None = None, taps: Sequence[str] = (),
              relu: Callable | None = None, perturb: Mapping[str, jax.Array] | None = None,
              prepared: Mapping | None = None, flipped: Mapping | None = None,
              replace: Mapping[str, jax.Array] | None = None):
        """``forward(params, x, upto, taps, relu, perturb) -> (output, {tap: array})``; pure, jit/vmap-able.

        Args:
          params: ``{layer: {"kernel", "bias"}}`` (e.g. ``model.params``).
          x: ``[N, H, W, C]`` preprocessed images (see :func:`jaxviz.preprocess_input`).
          upto: stop after this layer; nothing after it is computed.
          taps: layers whose outputs are also returned; ``"logits"`` is the pre-softmax score.
          relu: replaces every plain ReLU of the network (custom-VJP ones: guided backprop, deconvnet).
          perturb: ``{layer: array}`` added to those layers' outputs; differentiate w.r.t. a zero
            perturbation to get the gradient w.r.t. a layer's output (Grad-CAM).
          prepared: :meth:`prepared` of ``params``, computed once outside a loop or a cache, so the fast
            ops do not derive their kernels inside every program (same values, less work). ``flipped`` is
            its former name.
          replace: ``{layer: array}`` taken as those layers' outputs; what only they read is not computed
            (run the layers after a CAM layer from given activations).
        """
        prepared = flipped if prepared is None else prepared
        out, tapped = graph_lib.forward(self.graph, params, x, ops=self.ops, upto=upto, taps=taps, relu=relu,
                                        perturb=perturb, prepared=prepared, replace=replace)
        return out, tapped

    def prepared(self, params: dict | None = None) -> dict:
        """The kernels the model's ops derive from ``params`` (default ``model.params``): flipped input-gradient
        kernels, Winograd transforms and transposed dense kernels (:func:`jaxviz.graph.prepare`).

        Computed once per set of weights: the cache holds the last params' result, checked by the identity
        of every kernel, so new params (the sanity check's randomised ones) or a replaced ``model.params``
        are noticed.
        """
        params = self.params if params is None else params
        kernels = tuple(jax.tree_util.tree_leaves(params))  # kernels, and the BatchNorm statistics folded in
        hit = self._prepared_cache
        if hit is not None and len(hit[0]) == len(kernels) and all(a is b for a, b in zip(hit[0], kernels)):
            return hit[1]
        result = _prepare_jit(self.graph, self.ops)(params)
        self._prepared_cache = (kernels, result)
        return result

    def _prepared(self):
        return self.prepared()

    def preprocess_input(self, images):
        """RGB 0..255 images → this model's input (Keras's preprocessing in the model's ``preprocess`` mode)."""
        return preprocessing.preprocess(images, self.preprocess)

    def undo_preprocess(self, x):
        """This model's input → RGB 0..255 (the inverse of :meth:`preprocess_input`, not clipped)."""
        return preprocessing.unpreprocess(x, self.preprocess)

    # --- layer names -----------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.arch.name

    @property
    def num_classes(self) -> int:
        return int(self.arch.num_classes)

    @property
    def family(self) -> str | None:
        """A family of networks some method has a faster path for (``"vgg"``: a plain VGG stack), else ``None``."""
        return getattr(self.arch, "family", None)

    @property
    def input_channels(self) -> int:
        """Channels of the input (3 for RGB, 1 for grayscale; features of a flat vector)."""
        return int(self.arch.channels)

    @property
    def head(self) -> str:
        """``"flatten"``: with its top the model takes :attr:`input_hw` only; ``"gap"``: any size."""
        return self.arch.head

    @property
    def input_size(self) -> int | None:
        """The side of the square input the model was built for (``None``: not square, see :attr:`input_hw`)."""
        return self.arch.default_size

    @property
    def input_hw(self) -> tuple[int, int] | None:
        """``(height, width)`` images are resized to for this model (``None``: its input is not an image)."""
        hw = self.arch.input_hw
        return None if hw is None else tuple(hw)

    def require_spatial(self, what: str = "this command") -> None:
        """Raises one line if the model's input is not an image (a Dense-only model on feature vectors)."""
        if self.input_hw is None:
            raise JaxvizError(f"{what} needs a model with a spatial (image) input [N, H, W, C]; {self.arch.name} "
                              f"takes flat vectors [N, {self.arch.channels}] (summary and predict work on it)")

    @property
    def layer_names(self) -> list[str]:
        """Keras's ``[layer.name for layer in model.layers]``: ``input_layer``, ``block1_conv1``, …"""
        return self.graph.layer_names

    @property
    def conv_layer_names(self) -> list[str]:
        return [x.name for x in self.graph.layers if x.kind in CONV_KINDS]

    @property
    def last_conv_layer(self) -> str:
        return self.conv_layer_names[-1]

    @property
    def spatial_layer_names(self) -> list[str]:
        """Layers whose output is a spatial map ``[N, h, w, C]`` (what CAMs and feature maps can show)."""
        return [r.name for r in self.layer_table() if len(r.output_shape) == 3 and r.kind != "InputLayer"]

    @property
    def cam_layer(self) -> str:
        """The default layer of Grad-CAM and its family (:func:`jaxviz.describe.default_cam_layer`):
        ``block5_conv3`` on VGG16, ``conv5_block3_out`` on ResNet50, ``out_relu`` on MobileNetV2."""
        name = default_cam_layer(self.graph, self.layer_table(), HEAD_KINDS, PLUMBING_KINDS)
        if name is None:
            raise LayerError(f"{self.arch.name} has no layer with a spatial map to explain")
        return name

    def _order(self, name: str) -> int:
        return self.graph.index[self.graph.resolve(name)]

    def check_layers(self, layers: str | Iterable[str]) -> tuple[str, ...]:
        """Validates layer names; returns them as a tuple in network order, without repeats."""
        names = (layers,) if isinstance(layers, str) else tuple(layers)
        if not names:
            raise LayerError("no layer given; valid layers: " + ", ".join(self.layer_names))
        full = []
        for n in names:
            if n == "logits" and self.include_top:
                full.append(n)
                continue
            try:
                full.append(self.graph.resolve(n))  # a nested model's inner layer may go by its bare name
            except LayerError as e:
                if "ambiguous" in str(e):
                    raise
                raise LayerError(
                    f"unknown layer {n!r} for {self.arch.name}"
                    f"{'' if self.include_top else ' without top'}; valid layers: {', '.join(self.layer_names)}"
                ) from None
        return tuple(sorted(set(full), key=lambda n: (self._order(n), n)))

    def deepest(self, layers: Iterable[str]) -> str:
        """The layer among ``layers`` that comes last in the network (where a truncated pass stops)."""
        return max(layers, key=lambda n: (self._order(n), n != "logits"))

    def layer_table(self, input_shape=None, upto: str | None = None) -> list[LayerInfo]:
        """Keras's layer list: names, kinds, output shapes (without the batch axis) and parameter counts.

        With ``upto``, only the layers that layer depends on (a conv layer's rows at an input size the head
        would not take)."""
        key = (None if input_shape is None else tuple(input_shape), upto)
        if key not in self._tables:
            if self._table is not None:  # the front end's own table
                rows = self._table(input_shape)
                if upto is not None:
                    last = self.graph.resolve(upto)
                    rows = rows[: next(i for i, r in enumerate(rows) if r.name == last) + 1]
                self._tables[key] = rows
            else:
                self._tables[key] = graph_layer_table(self.graph, self.params, input_shape, upto)
        return self._tables[key]

    def output_shape(self, layer: str, input_shape=None) -> tuple:
        self.check_layers(layer)
        name = self.graph.resolve(layer)
        return next(r.output_shape for r in self.layer_table(input_shape) if r.name == name)

    def channels(self, layer: str) -> int:
        return int(self.output_shape(layer)[-1])

    def to_flax(self, api: str = "nnx"):
        """This model as a Flax module holding its weights (:func:`jaxviz.frontends.flax_export.to_flax`): an NNX
        module, or for ``api="linen"`` ``(module, variables)``; it computes the same graph."""
        return flax_export.to_flax(self, api)

    # --- Keras-like entry points -----------------------------------------------------------------------

    def check_input(self, x, layers: str | Iterable[str] | None = None) -> jax.Array:
        """Validates a batch of preprocessed images ``[N, H, W, C]`` (or, for a model on flat vectors,
        ``[N, features]``) and returns it as float32 (:func:`jaxviz.input_rules.check_input`).

        ``layers``: what a truncated pass computes (those layers and what they depend on); the size must suit
        those layers only (VGG16 with its top takes 64×64 inputs up to ``block3_conv1``). Default: the whole
        model."""
        return input_rules.check_input(self, x, layers, probe=self._table is None)

    def min_side(self, layers: str | Iterable[str] | None = None) -> int:
        """The smallest input side the pass up to ``layers`` takes (default: the whole model's, ``arch.min_size``)."""
        if layers is None:
            return self.arch.min_size
        return graph_lib.min_input_side(self.graph, names=self.graph.ancestors(self.check_layers(layers)))

    def _features_program(self, layers: tuple[str, ...]):
        """The compiled pass that taps ``layers`` (the methods' one program cache, :func:`jaxviz.runtime.compiled`)."""
        deepest = self.deepest(layers)
        return runtime.compiled(self, "features", layers,
                                lambda fwd: lambda params, x: fwd(params, x, upto=deepest, taps=layers)[1])

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
        x = self.check_input(x, layers)
        head = self._head_layer()
        if head not in layers:
            with self._notice(("features", layers, x.shape)):
                return self._features_program(layers)(self.params, x)
        # The final activation runs as its own small program (see predict); the pass stops at the logits.
        inner = tuple(dict.fromkeys("logits" if name == head else name for name in layers))
        with self._notice(("features", inner, x.shape)):
            out = self._features_program(inner)(self.params, x)
        out[head] = _head(out["logits"], self.graph.head_activation, self._binary)
        return {name: out[name] for name in layers}

    @functools.cached_property
    def _binary(self) -> bool:
        """Whether the model's output is a single sigmoid unit (logits ``[-z, z]``, see :mod:`jaxviz.graph`)."""
        return self.graph.head_activation == "sigmoid" and self.num_classes == 2 and \
            self.output_shape(self.graph.outputs[0])[-1] == 1

    def _notice(self, key):
        """Says "compiling …" on stderr if a call for ``key`` (a program and input shape) runs an XLA compile
        longer than :attr:`jaxviz.runtime.CompileNotice.after_s`."""
        return runtime.CompileNotice(self, message=f"jaxviz: compiling {self.arch.name} for inputs "
                                                   f"{tuple(key[-1])}")

    def _head_layer(self) -> str | None:
        """The output layer whose softmax/sigmoid :meth:`predict` runs apart from the network's program."""
        layer, pre = self.graph.logits
        return layer if pre and self.include_top else None

    def predict(self, x, batch_size: int = 32) -> np.ndarray:
        """The model's output (softmax probabilities ``[N, num_classes]`` for a classifier; a single sigmoid
        unit's ``[N, 1]``), computed ``batch_size`` images at a time like Keras."""
        if not self.include_top:
            raise JaxvizError("predict needs the classifier: load the model with include_top=True")
        x = self.check_input(x)
        # The softmax in its own small program: fused into the network's program it slows XLA:CPU's whole
        # VGG16 pass (docs/PERFORMANCE.md); the numbers are the same.
        logits = runtime.logits_program(self)
        outs = []
        for i in range(0, x.shape[0], batch_size):
            chunk = x if x.shape[0] <= batch_size else x[i: i + batch_size]  # no slicing op for one chunk
            with self._notice(("predict", chunk.shape)):
                outs.append(np.asarray(_head(logits(self.params, chunk), self.graph.head_activation, self._binary)))
        return np.concatenate(outs, axis=0)

    @property
    def class_names(self) -> list[str]:
        """The output classes' names: ImageNet's (Keras's index) for 1000 classes, else the arch's own."""
        a = self.arch
        if a.class_names is not None:
            return list(a.class_names)
        if a.num_classes == 1000:

            return [name for _, name in class_index()]
        return [f"class_{i}" for i in range(a.num_classes)]

    def decode_predictions(self, probs, top: int = 5) -> list[list[tuple[str, str, float]]]:
        """:func:`jaxviz.decode_predictions` for this model's classes: per image ``top`` ``(id, name, score)``.

        The id is the ImageNet wnid for ImageNet models (exactly Keras's result), else the class index. A
        single sigmoid unit's ``[N, 1]`` output ``p`` is read as the two classes ``[1 - p, p]`` (class 1 is the unit,
        as in Keras).
        """

        if self.arch.class_names is None and self.arch.num_classes == 1000:
            return decode_predictions(probs, top)
        preds = np.asarray(probs)
        if self._binary and preds.ndim == 2 and preds.shape[1] == 1:
            preds = np.concatenate([1 - preds, preds], axis=1)
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
        text = format_table(self.name, self.layer_table(input_shape))
        print_fn(text)
        return text

    def __repr__(self) -> str:
        top = "" if self.include_top else ", include_top=False"
        return f"Model({self.arch.name!r}{top}, params={self.count_params:,}, source={self.source!r})"


@functools.partial(jax.jit, static_argnums=(1, 2))
def _head(logits, activation, binary):
    """The model's output from its logits: their softmax or sigmoid (``binary``: a single sigmoid unit, whose
    ``[-z, z]`` logits give back the unit's ``[N, 1]``), or the logits themselves."""
    if activation == "softmax":
        return jax.nn.softmax(logits, axis=-1)
    if activation == "sigmoid":
        return jax.nn.sigmoid(logits[:, 1:] if binary else logits)
    return logits


def load(arch: str = "vgg16", weights: str | None = "imagenet", include_top: bool = True,
         ops: str | ops_lib.Ops | None = None, preprocess: str | None = None) -> Model:
    """Builds a model and loads its weights.

    Args:
      arch: "vgg16", "vgg19", "vgg_demo", "vgg_demo_gap" (or "vgg_tiny", a few-channel VGG16 for tests), or
        the path of a whole-model file: Keras 3 ``.keras``, a legacy Keras ``.h5`` written by
        ``model.save`` (Keras 2 / tf.keras / Keras 3), an ONNX ``.onnx`` (PyTorch's ``torch.onnx.export``,
        tf2onnx; needs ``pip install 'jaxviz[onnx]'``), or jaxviz's converted ``.npz`` (``jaxviz convert``).
      weights: for a named architecture: "imagenet" (Keras's files: jaxviz cache, then Keras cache, then
        download; see :mod:`jaxviz.weights`), a path to a Keras ``.h5`` / ``.weights.h5`` or a converted
        ``.npz`` file, or ``None`` / ``"random:SEED"`` for deterministic He-initialised weights (``None`` =
        seed 0). For a model file: ``"imagenet"`` (the default) means the weights stored in the file, and
        ``None`` / ``"random:SEED"`` re-initialises its graph with seeded weights (:func:`seeded_params`:
        untrained, for sanity checks); a weight file or anything else is refused.
      include_top: include ``flatten``, ``fc1``, ``fc2`` and ``predictions`` (named architectures only).
      ops: "fast" (the default on CPUs: Winograd convolutions and precomputed kernels) or "exact" (plain
        ``lax``, Keras parity); see :mod:`jaxviz.ops`.
      preprocess: how images are prepared for it ("caffe", "tf", "torch", "rescale" or "none"); default: what the
        architecture or the file says (a Keras application's own mode), else "none" for files.

    Before creating any array, the first call applies jaxviz's XLA:CPU setting (:func:`jaxviz.xla_cpu.configure`)
    if JAX's backend has not started yet.

    Returns:
      A :class:`Model`.
    """
    xla_cpu.configure()
    if is_model_file(arch):
        return _load_file(arch, weights, ops, preprocess)
    a = vgg.get_arch(arch)
    front = vgg.front_end(a, include_top)
    bundled = front.profile.bundled_weights
    if bundled is not None and isinstance(weights, str) and weights.lower() in ("imagenet", bundled):
        # Weights that ship with jaxviz; "imagenet" (every command's default) means them.
        params, source = load_demo_params(a, include_top), f"{bundled}:{demo_weights_path(a)}"
    else:
        params, source = load_params(a, weights, include_top)
    mode = preprocessing.check_mode(preprocess or "caffe")
    return Model(front, params, include_top, source, ops=ops, preprocess=mode)


def _load_file(path, weights, ops, preprocess) -> Model:
    """A model from a whole-model file (:func:`jaxviz.frontends.files.read_model_file`), its weights checked
    against its layers by shapes alone before anything is computed."""
    seed = file_weights_seed(path, weights)
    graph, params, info = read_model_file(path)
    source = str(path)
    if seed is not None:
        params, source = seeded_params(graph, params, seed), f"random:{seed} (on the graph of {path})"
    mode = preprocessing.check_mode(preprocess or info.get("preprocess") or "none")
    try:  # shapes only (jax.eval_shape): weights that do not fit their layers fail here, nothing computed
        model = Model(graph, params, source=source, ops=ops, preprocess=mode)
        shape = None if model.input_hw is None else (*model.input_hw, model.input_channels)
        rows = model.layer_table(shape)
    except (TypeError, ValueError) as e:
        reason = printable(" ".join(str(e).split()))[:240]
        raise WeightsError(f"{path}: its weights do not fit its layers ({reason}); the file is corrupt or "
                           "was not saved by Keras's model.save") from None
    check_activation_sizes(path, rows, shape)
    return model


@functools.lru_cache(maxsize=64)
def _prepare_jit(graph, ops):
    return jax.jit(functools.partial(graph_lib.prepare, graph, ops=ops))
