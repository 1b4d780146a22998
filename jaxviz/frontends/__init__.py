"""Front ends: each turns one kind of model source into the model interface (:mod:`jaxviz.interface`): a layer
graph (or, for Flax, the module's own forward pass), its params, what the source says of itself, and the
architecture's profile.

- :mod:`.vgg`: VGG16/VGG19 and the demo networks, built from a table; :mod:`.vgg_weights` reads their Keras
  weight files;
- :mod:`.keras`: whole Keras models (``.keras``, ``.h5``, unzipped model folders), one HDF5 reader for every
  layout;
- :mod:`.onnx`: ONNX files (PyTorch's two exporters, tf2onnx), one converter per op;
- :mod:`.npz`: jaxviz's own pickle-free format (the graph as JSON and the params);
- :mod:`.files`: which of them reads a given file, and seeded weights for a file's graph;
- :mod:`.flax`: any Flax module, linen or NNX, run through Flax's own interception (:mod:`.flax_network`,
  :mod:`.flax_relu` for ReLUs written as functions, :mod:`.flax_factory` for ``--arch package.module:factory``);
  :mod:`.flax_export` turns any jaxviz model into a Flax module.

A front end is the only place that knows its source format, and where untrusted input ends: names are
validated, sizes checked before anything is read, nothing is executed.
"""
