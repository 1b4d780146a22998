"""The model interface: everything jaxviz's methods may ask of a model, and nothing else.

A front end (the VGG tables, :mod:`jaxviz.frontends.vgg`; a model file, :mod:`jaxviz.frontends.files`) turns what it
reads
into a :class:`FrontEnd` — a layer graph, a :class:`ModelInfo`, a :class:`jaxviz.profile.Profile` and,
where it has one, an exact layer table — and :class:`jaxviz.Model` turns that and the weights into an
object that satisfies :class:`ModelInterface`. The methods (attribution, visualisation, metrics, atlas,
figures, the command line) use only the members declared here; no method asks which front end made a model.
Where a method has a faster path for one family of networks (occlusion's incremental evaluation on a plain
VGG stack), it asks :attr:`ModelInterface.family`.

No I/O and no jaxviz imports beyond the graph type: this module only declares.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import jax

if TYPE_CHECKING:  # annotations only: the interface imports no implementation
    from .graph import Graph
    from .profile import Profile

#: ``family`` of a plain VGG stack: 3×3 "same" convolutions each followed by a ReLU, 2×2 max pools, then
#: Keras VGG's head (Flatten or global average pooling, Dense layers with ReLUs, a softmax Dense).
VGG_FAMILY = "vgg"


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One row of Keras's model table."""

    name: str
    kind: str  # InputLayer, Conv2D, MaxPooling2D, Flatten, GlobalAveragePooling2D, Dense
    output_shape: tuple  # without the batch axis; None for a free spatial size
    params: int
    kernel_shape: tuple | None = None  # Conv2D/Dense: kernel shape; bias is kernel_shape[-1]
    non_trainable: int = 0  # of ``params``: BatchNormalization's moving statistics, a frozen layer's weights
    inputs: tuple[str, ...] = ()  # the layers feeding it (Keras's "Connected to")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a front end says of its model besides the graph: its name, classes, input size and channels,
    and whether its head fixes the input size (:class:`jaxviz.frontends.vgg.Arch` has the same fields).

    ``input_hw`` is the ``(height, width)`` images are resized to (the file's, or 224×224 for a free size);
    ``None`` for a model whose input is not an image (a flat feature vector ``[N, channels]``).
    ``default_size`` is the side of a square ``input_hw``, else ``None``. ``family`` names a family of
    networks some method has a faster path for (:data:`VGG_FAMILY`), else ``None``."""

    name: str
    num_classes: int
    default_size: int | None
    head: str  # "flatten": the input size is fixed; "gap": free
    class_names: tuple[str, ...] | None = None
    min_size: int = 32
    channels: int = 3
    input_hw: tuple[int, int] | None = (224, 224)
    family: str | None = None

    @property
    def spatial(self) -> bool:
        """Whether the model takes images ``[N, H, W, C]`` (not flat vectors)."""
        return self.input_hw is not None


@dataclasses.dataclass(frozen=True)
class FrontEnd:
    """What a front end hands :class:`jaxviz.Model`.

    Attributes:
      graph: the layer graph (:class:`jaxviz.graph.Graph`) the forward pass runs.
      info: the model's description (:class:`ModelInfo` or a :class:`jaxviz.frontends.vgg.Arch`).
      profile: the architecture's defaults (:class:`jaxviz.profile.Profile`).
      table: ``table(input_shape) -> [LayerInfo]``, the front end's exact layer table for any input size, or
        ``None``: the model computes its table from the graph's shapes (a size some layer cannot take then
        shows as an error, which :meth:`ModelInterface.check_input` reports).
    """

    graph: Graph
    info: Any
    profile: Profile
    table: Callable[[tuple | None], list[LayerInfo]] | None = None


@runtime_checkable
class ModelInterface(Protocol):
    """What every method may ask of a model (:class:`jaxviz.Model` implements it).

    Description:
      name, num_classes, class_names, include_top, source, profile, family: see the members.
      input_hw, input_size, input_channels, head, min_side: the input size rules.
      layer_names, conv_layer_names, spatial_layer_names, cam_layer, layer_table, output_shape, channels:
        layer names and kinds.
    Computation:
      apply (the pure forward pass), params (a pytree, always passed traced), prepared, graph and module
      (the graph and the graph bound to its ops, hashable keys of compiled programs), features, predict.
    Input:
      preprocess, preprocess_input, undo_preprocess, check_input, check_layers, require_spatial, deepest.

    ``arch`` (the front end's :class:`ModelInfo` or :class:`jaxviz.frontends.vgg.Arch`) remains for code written
    against it; methods ask the plain members above.
    """

    #: The model's name (``"vgg16"``, a file's model name).
    name: str
    #: ``{layer: {"kernel", "bias", …}}`` of float32 arrays; methods pass it (or a same-shaped tree: the
    #: sanity check's randomised weights) as a traced argument to :meth:`apply`.
    params: dict
    #: Whether the classifier head is present (``"logits"`` and class scores need it).
    include_top: bool
    #: Where the weights came from (a path, ``"imagenet:<path>"``, ``"random:SEED"``).
    source: str
    #: How images are prepared for it: ``"caffe"``, ``"tf"``, ``"torch"``, ``"rescale"`` or ``"none"``.
    preprocess: str
    #: The architecture's defaults (default image, score, DeepVis and pattern step sizes, bundled weights).
    profile: Profile
    #: The layer graph: layers' kinds, configs and inputs (``graph.by_name``, ``graph.resolve``).
    graph: Graph
    #: ``graph`` bound to the model's ops (:class:`jaxviz.graph.Network`): hashable, a program cache's key.
    module: Hashable
    arch: Any

    def apply(self, params: dict, x: jax.Array, upto: str | None = None, taps: Sequence[str] = (),
              relu: Callable | None = None, perturb: Mapping[str, jax.Array] | None = None,
              prepared: Mapping | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``(output, {tap: array})``: the pure forward pass, stopped after ``upto``, returning ``taps``
        (``"logits"``: the pre-softmax score), every plain ReLU replaced by ``relu``, ``perturb[layer]`` added
        to that layer's output; jit-, grad- and vmap-able."""

    def prepared(self, params: dict | None = None) -> dict:
        """The kernels the ops derive from ``params``, computed once per set of weights (for :meth:`apply`)."""

    @property
    def num_classes(self) -> int:
        """Number of output classes (2 for a single sigmoid unit)."""

    @property
    def class_names(self) -> list[str]:
        """The output classes' names, in output order."""

    @property
    def family(self) -> str | None:
        """A family of networks some method has a faster path for (:data:`VGG_FAMILY`), else ``None``."""

    @property
    def input_hw(self) -> tuple[int, int] | None:
        """``(height, width)`` images are resized to; ``None``: the input is a flat vector, not an image."""

    @property
    def input_size(self) -> int | None:
        """The side of a square :attr:`input_hw`, else ``None``."""

    @property
    def input_channels(self) -> int:
        """Channels of the input (3 for RGB, 1 for grayscale; features of a flat vector)."""

    @property
    def head(self) -> str:
        """``"flatten"``: with its top the model takes :attr:`input_hw` only; ``"gap"``: any size."""

    def min_side(self, layers: str | Iterable[str] | None = None) -> int:
        """The smallest input side a pass up to ``layers`` (default: the whole model) takes."""

    @property
    def layer_names(self) -> list[str]:
        """Every layer's name, in network order (Keras's ``[l.name for l in model.layers]``)."""

    @property
    def conv_layer_names(self) -> list[str]:
        """Layers whose outputs are convolution channels (filter patterns, kernels)."""

    @property
    def spatial_layer_names(self) -> list[str]:
        """Layers whose output is a spatial map ``[N, h, w, C]``."""

    @property
    def cam_layer(self) -> str:
        """Grad-CAM's default layer: the last spatial map before the head."""

    def layer_table(self, input_shape=None, upto: str | None = None) -> list[LayerInfo]:
        """Keras's layer list (names, kinds, output shapes, parameter counts), at ``input_shape``."""

    def output_shape(self, layer: str, input_shape=None) -> tuple:
        """``layer``'s output shape without the batch axis."""

    def channels(self, layer: str) -> int:
        """Channels of ``layer``'s output."""

    def check_layers(self, layers: str | Iterable[str]) -> tuple[str, ...]:
        """Validated layer names, in network order (one line naming the valid ones otherwise)."""

    def deepest(self, layers: Iterable[str]) -> str:
        """The layer among ``layers`` that comes last in the network."""

    def check_input(self, x, layers: str | Iterable[str] | None = None) -> jax.Array:
        """``x`` as float32 after checking its shape against the input rules (one line otherwise)."""

    def require_spatial(self, what: str = "this command") -> None:
        """Raises one line if the model's input is not an image."""

    def preprocess_input(self, images):
        """RGB 0..255 images → this model's input."""

    def undo_preprocess(self, x):
        """This model's input → RGB 0..255."""

    def features(self, x, layers: str | Iterable[str]) -> dict[str, jax.Array]:
        """Outputs of ``layers`` for ``x`` from one forward pass."""

    def predict(self, x, batch_size: int = 32):
        """The model's output probabilities ``[N, num_classes]`` (a sigmoid unit's ``[N, 1]``)."""

    def decode_predictions(self, probs, top: int = 5) -> list[list[tuple[str, str, float]]]:
        """Per image, the ``top`` ``(id, name, score)``."""

    def summary(self, input_shape=None, print_fn: Callable[[str], None] = print) -> str:
        """Keras's model table as text."""


#: The members of :class:`ModelInterface`, in declaration order (what a front end's model must offer).
MEMBERS: tuple[str, ...] = tuple(dict.fromkeys(
    name for name in (*ModelInterface.__annotations__, *vars(ModelInterface)) if not name.startswith("_")))
