import sys

from esnode_agent.cli import main

sys.exit(main())
