"""Front ends that turn models written elsewhere into a :class:`jaxviz.Model` (:mod:`jaxviz.frontends.flax`:
any Flax linen or NNX module)."""
