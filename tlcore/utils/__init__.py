"""Utilities under TransformerLens 2.x's names: every public name of ``transformer_lens.utils``.

``from tlcore import utils`` replaces ``from transformer_lens import utils``; the names, argument
names and defaults are TransformerLens 2.18's (``tests/unit/test_utils_api.py`` checks the list).

Examples:
    >>> from tlcore import utils
    >>> utils.get_act_name("pattern", 3)
    'blocks.3.attn.hook_pattern'
    >>> import torch
    >>> utils.Slice((1, 3)).apply(torch.tensor([10, 11, 12, 13]))
    tensor([11, 12])
"""

from typing import Any

from tlcore.factored_matrix import FactoredMatrix
from tlcore.utils.act_names import get_act_name
from tlcore.utils.activations import (
    ACTIVATION_FN_DICT,
    XIELU,
    gelu_fast,
    gelu_new,
    gelu_pytorch_tanh,
    solu,
    xielu,
)
from tlcore.utils.attrs import (
    USE_DEFAULT_VALUE,
    LocallyOverridenDefaults,
    get_nested_attr,
    override_or_use_default_value,
    set_nested_attr,
)
from tlcore.utils.environment import (
    is_library_available,
    print_gpu_mem,
    select_compatible_kwargs,
    warn_if_mps,
)
from tlcore.utils.factored import composition_scores, get_corner, transpose
from tlcore.utils.hub import (
    clear_huggingface_cache,
    download_file_from_hf,
    get_dataset,
    get_tokenizer_with_bos,
)
from tlcore.utils.initialization import (
    calc_fan_in_and_fan_out,
    init_kaiming_normal_,
    init_kaiming_uniform_,
    init_xavier_normal_,
    init_xavier_uniform_,
)
from tlcore.utils.losses import get_attention_mask, lm_accuracy, lm_cross_entropy_loss
from tlcore.utils.matrices import (
    check_structure,
    is_lower_triangular,
    is_square,
    repeat_along_head_dimension,
)
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
    "ACTIVATION_FN_DICT",
    "CACHE_DIR",
    "USE_DEFAULT_VALUE",
    "XIELU",
    "FactoredMatrix",
    "LocallyOverridenDefaults",
    "Slice",
    "SliceInput",
    "TokenizedDataset",
    "calc_fan_in_and_fan_out",
    "check_structure",
    "clear_huggingface_cache",
    "composition_scores",
    "download_file_from_hf",
    "gelu_fast",
    "gelu_new",
    "gelu_pytorch_tanh",
    "get_act_name",
    "get_attention_mask",
    "get_corner",
    "get_cumsum_along_dim",
    "get_dataset",
    "get_device",
    "get_input_with_manually_prepended_bos",
    "get_nested_attr",
    "get_offset_position_ids",
    "get_tokenizer_with_bos",
    "get_tokens_with_bos_removed",
    "init_kaiming_normal_",
    "init_kaiming_uniform_",
    "init_xavier_normal_",
    "init_xavier_uniform_",
    "is_library_available",
    "is_lower_triangular",
    "is_square",
    "keep_single_column",
    "lm_accuracy",
    "lm_cross_entropy_loss",
    "override_or_use_default_value",
    "print_gpu_mem",
    "remove_batch_dim",
    "repeat_along_head_dimension",
    "sample_logits",
    "select_compatible_kwargs",
    "set_nested_attr",
    "solu",
    "test_prompt",
    "to_numpy",
    "tokenize_and_concatenate",
    "transpose",
    "warn_if_mps",
    "xielu",
]


def __getattr__(name: str) -> Any:
    if name == "CACHE_DIR":  # the hub cache folder; huggingface_hub loads only when asked
        from tlcore.utils.hub import hub_cache_dir

        return hub_cache_dir()
    raise AttributeError(f"module 'tlcore.utils' has no attribute {name!r}")
