"""The ``invlab`` command line: thin — parses, calls the library, prints.

Errors: invlab's own error types (bad data, checkpoint, config, store, a locked output
folder, failed cells) and OS errors (read-only folder, full disk) end the command with one
line ``invlab: error: <message>`` and exit status 2 (1 when study cells failed); ``--debug``
or ``INVLAB_DEBUG=1`` shows the traceback instead. SIGTERM stops a study cleanly (finished
cells stay in the store, the output lock is released) with a message and status 143.

Package layout: :mod:`invlab.cli.app` (parser assembly, error handling, logging setup) and
one module per command group: :mod:`~invlab.cli.data`, :mod:`~invlab.cli.catalog` (models,
groups, transforms and metrics lists), :mod:`~invlab.cli.measure`, :mod:`~invlab.cli.study`
(the studies and ``invlab report``), :mod:`~invlab.cli.zoo`, :mod:`~invlab.cli.audit`.
"""

from __future__ import annotations

from invlab.cli.app import Terminated, build_parser, main

__all__ = ["Terminated", "build_parser", "main"]
