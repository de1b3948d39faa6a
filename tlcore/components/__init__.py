"""Hooked components, one concept per file.

Dimension glossary (used in every jaxtyping annotation):

============  ============================================================
``batch``     sequences in the batch
``pos``       positions (``q_pos``/``k_pos`` for queries and keys)
``head_index``  attention heads (``kv_head`` for key/value heads under GQA)
``d_model``   residual stream width
``d_head``    per-head width
``d_mlp``     MLP hidden width
``d_vocab``   vocabulary size
``expert``    MoE experts
============  ============================================================
"""
