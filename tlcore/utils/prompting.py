"""``utils.test_prompt``: how well does the model predict an answer after a prompt?

(The module is not called ``test_*.py`` so that pytest never collects it; the function carries
``__test__ = False`` so a test module that imports it does not collect it either.)
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["test_prompt"]


def test_prompt(
    prompt: str,
    answer: str | list[str],
    model: Any,
    prepend_space_to_answer: bool = True,
    print_details: bool = True,
    prepend_bos: bool | None = None,
    top_k: int = 10,
) -> None:
    """Print how the model ranks an answer after a prompt (TransformerLens's ``utils.test_prompt``).

    For each answer token: its rank, logit and probability, then the ``top_k`` most likely tokens
    at that position; finally the list of ranks. A multi-token answer is scored token by token
    (teacher-forced); a list of answers compares their first tokens as alternatives.

    Args:
        prompt: The prompt, e.g. ``"Why did the elephant cross the"``.
        answer: The answer, e.g. ``"road"``, or a list of single-token alternatives.
        model: A ``HookedTransformer`` with a tokenizer.
        prepend_space_to_answer: Prepend a space to answers that lack one.
        print_details: Print the tokenisation and the per-token tables (the final ranks line is
            always printed).
        prepend_bos: Prepend BOS to the prompt (default ``cfg.default_prepend_bos``).
        top_k: How many top tokens to list per answer position.

    Example:
        With ``model`` SmolLM2-135M-Instruct (``from_pretrained("smollm2-135m-instruct")``):

        >>> from tlcore import utils
        >>> utils.test_prompt("Why did the elephant cross the", "road", model, top_k=3)
        Tokenized prompt: ['<|im_start|>', 'Why', ' did', ' the', ' elephant', ' cross', ' the']
        Tokenized answer: [' road']
        Performance on answer token:
        Rank: 0        Logit: 18.78 Prob: 69.17% Token: | road|
        Top 0th token. Logit: 18.78 Prob: 69.17% Token: | road|
        Top 1th token. Logit: 15.78 Prob:  3.46% Token: | street|
        Top 2th token. Logit: 15.75 Prob:  3.35% Token: | river|
        Ranks of the answer tokens: [(' road', 0)]
    """
    answers = [answer] if isinstance(answer, str) else list(answer)
    n_answers = len(answers)
    multiple = n_answers > 1
    if prepend_space_to_answer:
        answers = [a if a.startswith(" ") else " " + a for a in answers]

    prompt_tokens = model.to_tokens(prompt, prepend_bos=prepend_bos)
    answer_tokens = model.to_tokens(answers, prepend_bos=False)
    if multiple:  # alternatives: only their first tokens compete
        answer_tokens = answer_tokens[:, :1]
    tokens = torch.cat([prompt_tokens.repeat(answer_tokens.shape[0], 1), answer_tokens], dim=1)

    prompt_str_tokens = model.to_str_tokens(prompt, prepend_bos=prepend_bos)
    answer_str_tokens_list = [model.to_str_tokens(a, prepend_bos=False) for a in answers]
    prompt_length = len(prompt_str_tokens)
    answer_length = 1 if multiple else len(answer_str_tokens_list[0])
    if print_details:
        print("Tokenized prompt:", prompt_str_tokens)
        print(
            "Tokenized answers:" if multiple else "Tokenized answer:",
            answer_str_tokens_list if multiple else answer_str_tokens_list[0],
        )
    with torch.no_grad():
        logits = model(tokens)
    probs = logits.softmax(dim=-1)

    answer_ranks = []
    for index in range(prompt_length, prompt_length + answer_length):
        targets = tokens[:, index]
        target_strs = [a[index - prompt_length] for a in answer_str_tokens_list]
        token_probs = probs[:, index - 1]  # the position before predicts this one
        sorted_probs, sorted_tokens = token_probs.sort(descending=True)
        ranks = sorted_tokens.argsort(-1)[torch.arange(n_answers), targets].tolist()
        answer_ranks.append(list(zip(target_strs, ranks)))
        if not print_details:
            continue
        print(f"Performance on answer token{'s' if multiple else ''}:")
        for i in range(n_answers):
            print(
                f"Rank: {ranks[i]: <8} Logit: {logits[i, index - 1, targets[i]].item():5.2f} "
                f"Prob: {token_probs[i, targets[i]].item():6.2%} Token: |{target_strs[i]}|"
            )
        for i in range(min(top_k, sorted_tokens.shape[-1])):
            token = sorted_tokens[0, i]
            print(
                f"Top {i}th token. Logit: {logits[0, index - 1, token].item():5.2f} "
                f"Prob: {sorted_probs[0, i].item():6.2%} Token: |{model.to_string(token)}|"
            )
    if multiple:
        print(f"Ranks of the answer tokens: {answer_ranks}")
    else:
        print(f"Ranks of the answer tokens: {[r[0] for r in answer_ranks]}")


test_prompt.__test__ = False  # type: ignore[attr-defined]  # a utility, not a pytest test
