"""Utilities under TransformerLens 2.x's names.

``from tlcore import utils`` replaces ``from transformer_lens import utils``.

Examples:
    >>> from tlcore import utils
    >>> utils.get_act_name("pattern", 3)
    'blocks.3.attn.hook_pattern'
    >>> import torch
    >>> utils.Slice((1, 3)).apply(torch.tensor([10, 11, 12, 13]))
    tensor([11, 12])
"""

from tlcore.factored_matrix import FactoredMatrix
from tlcore.utils.act_names import get_act_name
from tlcore.utils.factored import composition_scores, get_corner, transpose
from tlcore.utils.losses import get_attention_mask, lm_accuracy, lm_cross_entropy_loss
from tlcore.utils.prompting import test_prompt
from tlcore.utils.sampling import sample_logits
from tlcore.utils.slicing import Slice, SliceInput
from tlcore.utils.tokenize import (
    TokenizedDataset,
    get_cumsum_along_dim,
    get_device,
    get_input_with_manually_prepended_bos,
    get_offset_position_ids,
    get_tokens_with_bos_removed,
    keep_single_column,
    remove_batch_dim,
    to_numpy,
    tokenize_and_concatenate,
)

__all__ = [
    "FactoredMatrix",
    "Slice",
    "SliceInput",
    "TokenizedDataset",
    "composition_scores",
    "get_act_name",
    "get_attention_mask",
    "get_corner",
    "get_cumsum_along_dim",
    "get_device",
    "get_input_with_manually_prepended_bos",
    "get_offset_position_ids",
    "get_tokens_with_bos_removed",
    "keep_single_column",
    "lm_accuracy",
    "lm_cross_entropy_loss",
    "remove_batch_dim",
    "sample_logits",
    "test_prompt",
    "to_numpy",
    "tokenize_and_concatenate",
    "transpose",
]
