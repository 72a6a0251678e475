"""``python -m mlitb``: the same as the ``mlitb`` command."""

from .cli import main

main()
