"""Pipeline stages, in data-flow order: ingest -> process -> activations -> cluster -> select.

Each stage is one module with one small class (or pure functions for driver-side maths); heavy
per-worker state (tokenizer, model) is built in the class's constructor, which Ray Data runs
once per actor. Stages never import workflows or each other.
"""
