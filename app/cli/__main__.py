"""``python -m app.cli``: the ``juicer`` command."""

import sys

from app.cli.main import main

sys.exit(main())
