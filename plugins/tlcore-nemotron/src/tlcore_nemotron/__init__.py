"""tlcore plugin for NVIDIA Nemotron (``model_type: nemotron``).

The entry point ``tlcore_nemotron.plugin`` registers a trait (``mlp/squared_relu``), a weight op
(``layernorm1p``) and the ``nemotron`` spec (``specs/nemotron.yaml``).
"""

__version__ = "0.1.0"
