import sys

from bsmamba2_plugin.cpu_allocator import tune_cpu_allocator

tune_cpu_allocator()  # before torch allocates: see cpu_allocator.py

from bsmamba2_plugin.app.cli import main  # noqa: E402

sys.exit(main())
