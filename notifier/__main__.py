"""``python -m notifier``: the same as the ``notifier`` command."""

import sys

from notifier.cli import main

if __name__ == "__main__":  # not when a worker process (see notifier.render.pool) imports the main module
    sys.exit(main())
