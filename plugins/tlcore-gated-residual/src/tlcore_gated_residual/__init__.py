"""tlcore plugin: a block layout and a norm kind that no built-in spec uses, with an HF reference.

The entry point ``tlcore_gated_residual.plugin`` registers two trait kinds, ``block/gated_residual``
(each branch's output is multiplied by a learned per-channel gate before the residual add) and
``norm/scalenorm`` (ScaleNorm, ``g · x / ‖x‖``), and the ``gated_residual`` spec. The HF model the
spec is proven against lives in :mod:`tlcore_gated_residual.hf_reference`; importing it registers
it with transformers' ``AutoConfig``/``AutoModelForCausalLM`` (the spec's ``parity.hf_module``).

The point of the package: it adds both kinds with no edit to tlcore, and tlcore's cache analysis,
weight processing and parity tool work on them through the kinds' declarations alone.
"""

__version__ = "0.1.0"
