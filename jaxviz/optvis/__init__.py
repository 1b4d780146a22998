"""Feature visualisation by gradient ascent in input space, split by job as Lucent splits it
(objectives / param / transform / render): what is maximised (:mod:`.objectives`), how the image is
parametrised (:mod:`.param`), the random transformations and regularisers applied at each step
(:mod:`.transforms`) and the ascent loops (:mod:`.ascent`). :func:`jaxviz.visualize.patterns.filter_patterns`
and :func:`jaxviz.visualize.deepvis.class_patterns` are built from these parts; :mod:`.cost` sizes their
batches and :mod:`.hlo` checks their compiled programs.
"""
