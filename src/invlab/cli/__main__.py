"""``python -m invlab.cli``: the ``invlab`` command."""

import sys

from invlab.cli.app import main

sys.exit(main())
