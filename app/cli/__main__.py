"""``python -m app.cli``: the ``shoal`` command."""

from app.cli import main

main()
