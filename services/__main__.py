"""``python -m services`` is the ``sluice`` command."""

from services.cli import main

main()
