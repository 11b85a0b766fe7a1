"""Providers: the plug-ins that run pods somewhere. The contract is `base.Provider`."""
