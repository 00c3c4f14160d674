"""``python -m flox_trio.sim``: the simulator as a program."""

import sys

from ._cli import main

sys.exit(main())
