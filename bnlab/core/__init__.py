"""The torch-free core every other part stands on: the registry of names (registry.py), the
config and API schema (schema/), the wire format of layer points (wire.py) and the domain
errors (errors.py). It imports nothing from the engine, the server, the worker or the SDK."""
