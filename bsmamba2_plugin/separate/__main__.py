import sys

from bsmamba2_plugin.separate.cli import main

sys.exit(main())
