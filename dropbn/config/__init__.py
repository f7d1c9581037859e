"""The config interface: the schema, up-front validation and command-line composition (Hydra).
Validation checks names against the registries of dropbn.train, so this package sits above it."""
