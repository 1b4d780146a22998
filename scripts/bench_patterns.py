"""Filter-pattern benchmark: jaxviz vs Keras (JAX and TensorFlow backends). Logic in :mod:`jaxviz.bench`.

    python scripts/bench_patterns.py --quick            # block3_conv1 @ 64 px, 8 filters
    python scripts/bench_patterns.py --out bench.json   # block3/5_conv1 @ 64/150 px, 64 filters
    python scripts/bench_patterns.py --tf-python /path/to/venv-with-tensorflow/bin/python
"""

import sys

from jaxviz.bench import main

if __name__ == "__main__":
    sys.exit(main())
