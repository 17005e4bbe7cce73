"""``python -m upload_service.demo``: run the demo page's server (see ``server.py``)."""

import sys

from upload_service.demo.server import main

sys.exit(main())
