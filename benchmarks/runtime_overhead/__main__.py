"""`python -m benchmarks.runtime_overhead`: see the package docstring."""

import sys

from .run import main

sys.exit(main())
