"""Pod lifecycle: sync with the provider, status, env and volumes."""
