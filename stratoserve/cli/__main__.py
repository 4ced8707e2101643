"""`python -m stratoserve.cli`, as the tests and benchmarks run it."""

import sys

from stratoserve.cli import main

sys.exit(main())
