"""Software-defined assets, one folder per workflow; asset keys are prefixed by their group."""
