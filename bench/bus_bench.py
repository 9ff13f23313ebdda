"""Bus benchmark against raw pyzmq in the same run; the same as ``linebus bench``.

python bench/bus_bench.py [--quick] [--json]
"""

import sys

from bus.bench import main

if __name__ == "__main__":
    sys.exit(main())
