"""`python -m bench run ...`: see bench/README.md."""

from .cli import main

main()
