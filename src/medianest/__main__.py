"""``python -m medianest``: the same as the ``medianest`` command."""

from medianest.cli import main

main()
