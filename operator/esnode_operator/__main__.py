"""python -m esnode_operator"""

import sys

from esnode_operator.cli import main

sys.exit(main())
