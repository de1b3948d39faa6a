"""tlcore.evals: TransformerLens 2.18's evals, on local data (nothing downloaded)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from tlcore_offline_models import gpt2_tokenizer

from tlcore import HookedTransformer, evals
from tlcore.utils import lm_cross_entropy_loss

API = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "transformer_lens_2" / "api.json").read_text()
)["transformer_lens.evals"]
# device="cuda" in TransformerLens; None (the model's device) here.
CHANGED_DEFAULTS = {("evaluate_on_dataset", "device"), ("induction_loss", "device")}
TEXTS = [f"Sentence number {i} says that the {i % 7} cats sat on {i % 5} mats." for i in range(400)]


@pytest.fixture(scope="module")
def tokenizer():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    cfg = dict(n_layers=1, d_model=8, d_head=4, n_ctx=1024, act_fn="relu", seed=0, device="cpu")
    return HookedTransformer(cfg, tokenizer=tokenizer)


def test_names_and_signatures_are_transformer_lens_s() -> None:
    assert [n for n in API["names"] if not hasattr(evals, n)] == []
    for name, theirs in API["signatures"].items():
        if theirs is None:
            continue
        ours = [
            [p.name, p.kind.name, None if p.default is p.empty else repr(p.default)]
            for p in inspect.signature(getattr(evals, name)).parameters.values()
        ]
        for (pname, kind, default), mine in zip(theirs, ours):
            expected = "None" if (name, pname) in CHANGED_DEFAULTS else default
            assert mine == [pname, kind, expected], name
        # tlcore appends only keyword-only parameters with defaults (dataset=, datasets=)
        assert all(k == "KEYWORD_ONLY" and d is not None for _, k, d in ours[len(theirs) :]), name
    assert evals.DATASET_NAMES == ["wiki", "owt", "pile", "code"]
    assert len(evals.MMLU_SUBJECTS) == 57


def test_sanity_check_is_the_loss_on_the_zoom_in_paragraph(model) -> None:
    loss = evals.sanity_check(model)
    tokens = model.to_tokens(evals.SANITY_TEXT)
    assert loss.item() == pytest.approx(model(tokens, return_type="loss").item())
    assert "zoomed in" in evals.SANITY_TEXT


@pytest.mark.parametrize("make", evals.DATASET_LOADERS)
def test_data_loaders_take_local_texts(make, tokenizer) -> None:
    loader = make(tokenizer, batch_size=2, dataset=TEXTS)
    batch = next(iter(loader))
    assert batch["tokens"].shape == (2, 1024)
    assert (batch["tokens"][:, 0] == tokenizer.bos_token_id).all()


def test_evaluate_on_local_corpora(model, tokenizer) -> None:
    losses = evals.evaluate(
        model, truncate=1, batch_size=2, datasets={"wiki": TEXTS, "code": TEXTS}
    )
    assert sorted(losses) == ["code_loss", "wiki_loss"]
    loader = evals.make_wiki_data_loader(tokenizer, batch_size=2, dataset=TEXTS)
    first = next(iter(loader))["tokens"]
    single = evals.evaluate_on_dataset(model, [{"tokens": first}], truncate=0)
    assert single == pytest.approx(model(first, return_type="loss").item())


def test_induction_loss_scores_the_repeated_half(model) -> None:
    torch.manual_seed(0)
    got = evals.induction_loss(model, batch_size=2, subseq_len=10, prepend_bos=True)
    torch.manual_seed(0)
    first = torch.randint(100, 20000, (2, 10))
    tokens = torch.cat([first, first], dim=1)
    tokens[:, 0] = model.tokenizer.bos_token_id
    per_token = lm_cross_entropy_loss(model(tokens), tokens, per_token=True)
    assert got.item() == pytest.approx(per_token[:, 11:].mean().item())


def test_ioi_dataset_is_transformer_lens_s(tokenizer) -> None:
    ds = evals.IOIDataset(tokenizer, num_samples=4, symmetric=True)
    assert len(ds) == 4
    texts = {s["text"] for s in ds.samples}
    assert len(texts) == 2  # random.seed(42) in get_sample: one prompt and its swap, as TL
    item = ds[0]
    assert item["prompt"][0] == tokenizer.bos_token_id
    assert tokenizer.decode(item["prompt"][-item["IO"].shape[0] :]) == ds.samples[0]["IO"]
    assert {tokenizer.decode(ds[i]["IO"]) for i in range(2)} == {" John", " Mary"}


class NextTokenOracle(torch.nn.Module):
    """Logits 1 on the true next token at every position (0 elsewhere)."""

    def __init__(self, d_vocab: int) -> None:
        super().__init__()
        self.d_vocab = d_vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens: torch.Tensor, return_type: str = "logits") -> torch.Tensor:
        logits = torch.zeros(*tokens.shape, self.d_vocab)
        logits[:, :-1].scatter_(-1, tokens[:, 1:, None], 1.0)
        return logits


def test_ioi_eval_reads_the_logit_before_the_answer(tokenizer) -> None:
    oracle = NextTokenOracle(len(tokenizer))
    ds = evals.IOIDataset(tokenizer, num_samples=6, symmetric=True)
    result = evals.ioi_eval(oracle, dataset=ds, batch_size=4, tokenizer=tokenizer)
    assert result == {"Logit Difference": 1.0, "Accuracy": 1.0}


def test_mmlu_on_local_rows(tokenizer) -> None:
    rows = {
        "anatomy": [
            {"question": f"Q{i}?", "choices": ["w", "x", "y", "z"], "answer": i % 4}
            for i in range(8)
        ]
    }
    data = evals.make_mmlu_data_loader("anatomy", num_samples=5, dataset=rows)
    assert len(data) == 5 and data[0]["subject"] == "anatomy"
    b_token = tokenizer.encode(" B")[0]

    class AlwaysB(NextTokenOracle):
        def forward(self, tokens, return_type="logits"):
            logits = torch.zeros(*tokens.shape, self.d_vocab)
            logits[..., b_token] = 5.0
            return logits

    result = evals.mmlu_eval(AlwaysB(len(tokenizer)), tokenizer, "anatomy", dataset=rows)
    assert result["num_total"] == 8 and result["num_correct"] == 2  # answers 1 and 5 are "B"
    assert result["subject_scores"] == {"anatomy": 0.25}
    with pytest.raises(ValueError, match="Invalid subject"):
        evals.make_mmlu_data_loader("astrology")
