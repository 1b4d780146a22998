"""The methods' shared runtime, one module per job: argument checks (:mod:`.checks`), class scores and
gradients (:mod:`.scores`), batching and chunking (:mod:`.batching`), the ONE program cache and trace counter
(:mod:`.programs`), the methods' shared drivers and map finishing (:mod:`.drivers`), and compile notices and
chunk progress (:mod:`.notices`). Every name is re-exported here: ``runtime.check_score``, ``runtime.compiled``….

Every method in :mod:`jaxviz.attribution` has the signature

    method(model, x, target=None, **options) -> [N, H, W]        (``reduce=None``: [N, H, W, 3])

- ``model``: a :class:`jaxviz.Model` with its classifier (anything with ``apply``, ``params``,
  ``check_input`` and ``arch.num_classes`` works: the tests use tiny hand-set models).
- ``x``: ``[N, H, W, 3]`` preprocessed images (:func:`jaxviz.images.preprocess_input`).
- ``target``: ``None`` = each image's top class (from the same forward pass where possible), an ``int``
  for all images, or a sequence with one class per image.
- ``score``: what is explained. ``"logit"`` (default for the gradient methods) is the pre-softmax class
  score — what Captum differentiates when the model returns logits; ``"prob"`` the softmax probability;
  ``"log_prob"`` its logarithm.
- ``reduce``: how the channel axis is folded into one map: ``"sum"``, ``"mean"``, ``"max"``,
  ``"abs_max"``, ``"abs_sum"``, ``"norm"`` (L2) or ``None`` to keep the ``[N, H, W, 3]`` attributions.
  Methods whose attributions have no channel axis (the CAM family, occlusion, LIME) ignore the reduction
  and return their map repeated over the 3 channels for ``reduce=None``, so the shapes stay uniform.
- ``params``: weights to use instead of ``model.params`` (same tree): the model-randomisation sanity check
  re-uses the compiled programs with other weights this way.

Defaults and cost per image (fwd = forward pass, bwd = input-gradient pass):

    method                score     reduce    cost
    saliency              logit     max|·|    1 fwd + 1 bwd
    smoothgrad            logit     max|·|    1 fwd + n (fwd + bwd)
    integrated_gradients  logit     sum       2 fwd + steps (fwd + bwd)
    deconvnet             logit     abs_max   1 fwd + 1 bwd
    guided_backprop       logit     abs_max   1 fwd + 1 bwd
    gradcam               logit     —         1 fwd + 1 bwd   (jaxviz.gradcam, the book's: prob)
    guided_gradcam        logit     abs_max   2 (fwd + bwd)
    gradcam_plus_plus     logit     —         1 fwd + 1 bwd
    score_cam             prob      —         1 fwd + K fwd (K = the layer's channels)
    occlusion             logit     —         1 fwd + one (partial, see occlusion.py) fwd per window
    lime                  prob      —         1 fwd + n_samples fwd

Each method is one jitted program per (graph, ops, options, input shape); ``model.params`` is a traced
argument, so a second model of the same graph compiles nothing, and ``reduce`` is applied by a small shared
program afterwards, so it does not multiply the compiled programs. Programs hold no model: dropping a model
frees it.
"""

from .batching import (
                       CPU_BATCH,
                       activation_bytes,
                       batch_size_for,
                       check_sampled_args,
                       chunked_map,
                       chunked_sum,
                       per_chunk,
)
from .checks import (
                       REDUCTIONS,
                       SCORES,
                       check_choice,
                       check_input,
                       check_model,
                       check_positive,
                       check_reduce,
                       check_score,
                       check_targets,
                       num_classes,
                       params_of,
)
from .drivers import finish, finish_spatial, gradient_method, reduce_channels, resize_maps
from .notices import CompileNotice, chunk_done, chunk_progress, compile_count
from .programs import (
                       clear_programs,
                       compiled,
                       logits,
                       logits_program,
                       program_ops,
                       shared_program,
                       trace_counts,
)
from .scores import (
                       class_score,
                       fold_keys,
                       input_gradient,
                       logits_fn,
                       probabilities,
                       resolve_on_clean_images,
                       resolve_targets,
                       scores_of,
)

__all__ = [
    "CPU_BATCH", "REDUCTIONS", "SCORES", "CompileNotice", "activation_bytes", "batch_size_for", "check_choice",
    "check_input", "check_model", "check_positive", "check_reduce", "check_sampled_args", "check_score",
    "check_targets", "chunk_done", "chunk_progress", "chunked_map", "chunked_sum", "class_score",
    "clear_programs", "compile_count", "compiled", "finish", "finish_spatial", "fold_keys",
    "gradient_method", "input_gradient", "logits", "logits_fn", "logits_program", "num_classes", "params_of",
    "per_chunk", "probabilities", "program_ops", "reduce_channels", "resize_maps", "resolve_targets",
    "resolve_on_clean_images", "scores_of", "shared_program", "trace_counts",
]
