"""``python -m generic_connector``: the same as the ``generic-connector`` command."""

import sys

from generic_connector.cli import main

sys.exit(main())
