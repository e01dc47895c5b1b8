"""`python -m evlog`."""

from evlog.cli import main

main()
