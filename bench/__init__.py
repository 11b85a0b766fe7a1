"""Benchmarks: virtual-kubelet against the raw-client ceiling on a real local control plane."""
