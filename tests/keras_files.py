"""Writers for the Keras HDF5 weight layouts, for tests (h5py only; no Keras needed).

Each follows what Keras itself writes (see jaxviz.weights for the layouts):

* :func:`write_keras1` — the 2016 keras-applications files: root ``layer_names`` (bytes, with ``input_1``),
  per layer ``weight_names`` = ``[b"block1_conv1_W_1:0", b"block1_conv1_b_1:0"]`` with the datasets in
  the layer's group, and an empty ``weight_names`` on layers without weights.
* :func:`write_legacy` — ``save_weights_to_hdf5_group``: Keras 2 (``block1_conv1/kernel:0`` as bytes, groups in
  layer order, ``backend``/``keras_version`` root attrs) or Keras 3's legacy writer (``block1_conv1/kernel``
  as str, groups sorted by name, an empty ``top_level_model_weights`` group); optionally under
  ``model_weights`` (a whole-model ``.h5``) and with the attribute split in chunks (``layer_names0``, …).
* :func:`write_keras3` — ``model.save_weights("x.weights.h5")``: ``layers/<class-based auto name>/vars/0..n``,
  the layer's name in the ``vars`` group's ``name`` attr (optional: older Keras 3 did not store it).
"""

from __future__ import annotations

import numpy as np

from jaxviz.frontends import vgg

_KERAS3_CLASS = {"InputLayer": "input_layer", "Conv2D": "conv2d", "MaxPooling2D": "max_pooling2d",
                 "Flatten": "flatten", "GlobalAveragePooling2D": "global_average_pooling2d", "Dense": "dense"}


def seeded_params(arch, include_top=True, seed=0, input_scale=1 / 128, bias_scale=0.05) -> dict:
    """He-uniform kernels and small random biases, with the first layer scaled for ±128 inputs.

    Activations then stay O(1) through the network and the softmax is far from saturated (He's variance
    keeps the mean square of ReLU activations roughly constant from layer to layer). Uniform rather than
    normal draws: a third of the time for VGG's 138 M weights.
    """
    rng = np.random.default_rng(seed)
    params = {}
    for i, (name, (kshape, bshape)) in enumerate(vgg.weighted_layers(arch, include_top).items()):
        fan_in = int(np.prod(kshape[:-1]))
        limit = np.sqrt(6.0 / fan_in) * (input_scale if i == 0 else 1.0)
        kernel = rng.random(kshape, dtype=np.float32)
        kernel -= np.float32(0.5)
        kernel *= np.float32(2 * limit)  # U(-limit, limit): variance 2 / fan_in
        bias = (rng.random(bshape, dtype=np.float32) - np.float32(0.5)) * np.float32(2 * bias_scale)
        params[name] = {"kernel": kernel, "bias": bias}
    return params


def layer_names(arch, include_top=True, input_name="input_1") -> list[str]:
    """Keras's ``[l.name for l in model.layers]`` (the 2016 files call the input ``input_1``)."""
    rows = vgg.layer_table(arch, include_top)
    return [input_name if r.kind == "InputLayer" else r.name for r in rows]


def _set_list_attr(group, name, values, as_bytes=True, chunks=1):
    values = [v.encode("utf8") if as_bytes else v for v in values]
    if chunks == 1:
        group.attrs[name] = values
    else:
        for i, part in enumerate(np.array_split(np.asarray(values, dtype=object if not as_bytes else None),
                                                chunks)):
            group.attrs[f"{name}{i}"] = list(part)


def write_keras1(path, params, names, root_attrs=None) -> None:
    """The 2016 layout. ``names``: every layer of the model in order (see :func:`layer_names`)."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode("utf8") for n in names]
        for k, v in (root_attrs or {}).items():
            f.attrs[k] = v
        for n in names:
            g = f.create_group(n)
            if n in params:
                wn = [f"{n}_W_1:0", f"{n}_b_1:0"]
                g.attrs["weight_names"] = [w.encode("utf8") for w in wn]
                g.create_dataset(wn[0], data=params[n]["kernel"])
                g.create_dataset(wn[1], data=params[n]["bias"])
            else:
                g.attrs["weight_names"] = []


def write_legacy(path, params, names, *, flavour="keras2", model_weights=False, chunks=1,
                 weight_names=None) -> None:
    """``save_weights_to_hdf5_group`` as Keras 2 (``flavour="keras2"``) or Keras 3 (``"keras3"``) writes it.

    ``weight_names``: optional ``{layer: [name for kernel, name for bias]}`` overriding the stored names
    (the datasets are still written in kernel, bias order).
    """
    import h5py

    k3 = flavour == "keras3"
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if model_weights else f
        if model_weights:
            f.attrs["backend"] = "jax" if k3 else b"tensorflow"
            f.attrs["keras_version"] = "3.15.1" if k3 else b"2.15.0"
        _set_list_attr(root, "layer_names", names, as_bytes=not k3, chunks=chunks)
        root.attrs["backend"] = "jax" if k3 else b"tensorflow"
        root.attrs["keras_version"] = "3.15.1" if k3 else b"2.15.0"
        for n in sorted(names) if k3 else names:
            g = root.create_group(n)
            if n not in params:
                g.attrs["weight_names"] = []
                continue
            if weight_names and n in weight_names:
                wn = list(weight_names[n])
            else:
                wn = [f"{n}/kernel", f"{n}/bias"] if k3 else [f"{n}/kernel:0", f"{n}/bias:0"]
            _set_list_attr(g, "weight_names", wn, as_bytes=not k3)
            g.create_dataset(wn[0], data=params[n]["kernel"])
            g.create_dataset(wn[1], data=params[n]["bias"])
        if k3:
            root.create_group("top_level_model_weights").attrs["weight_names"] = []


def write_keras3(path, params, arch, include_top=True, *, store_names=True, model_name=None) -> None:
    """``model.save_weights("x.weights.h5")`` of Keras 3 for ``arch``."""
    import h5py

    used: dict[str, int] = {}
    with h5py.File(path, "w") as f:
        layers = f.create_group("layers")
        for row in vgg.layer_table(arch, include_top):
            cls = _KERAS3_CLASS[row.kind]
            i = used.get(cls, 0)
            used[cls] = i + 1
            v = layers.create_group(cls if i == 0 else f"{cls}_{i}").create_group("vars")
            if store_names:
                v.attrs["name"] = row.name
            if row.name in params:
                v.create_dataset("0", data=params[row.name]["kernel"])
                v.create_dataset("1", data=params[row.name]["bias"])
        top = f.create_group("vars")
        if store_names:
            top.attrs["name"] = model_name or vgg.get_arch(arch).name
