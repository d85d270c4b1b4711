"""`python -m agent ...` is `manet-agent ...`."""

import sys

from agent.launch import main

sys.exit(main())
