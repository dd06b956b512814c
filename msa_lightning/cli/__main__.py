"""``python -m msa_lightning.cli``: the ``msa`` command (also how Lightning's DDP launcher starts each rank)."""
from msa_lightning.cli.main import main

main()
