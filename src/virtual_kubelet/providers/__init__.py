"""Providers: the plug-ins that run pods somewhere (the built-in `mock` and `process`, and the
registry that finds third-party ones). They are built on the contract in `virtual_kubelet.sdk`."""
