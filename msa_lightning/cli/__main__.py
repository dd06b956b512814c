"""``python -m msa_lightning.cli``: the ``msa`` command (also how Lightning's DDP launcher starts each rank)."""

import sys

from msa_lightning.cli.main import main

sys.argv[0] = "msa"  # messages say `msa fit --help`, not `__main__.py fit --help`
main()
