"""`python -m virtual_kubelet` is the `virtual-kubelet` command."""

from .cli import main

main()
