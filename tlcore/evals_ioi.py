"""TransformerLens's indirect-object-identification evaluation (``evals.IOIDataset``, ``ioi_eval``).

Re-exported by :mod:`tlcore.evals`, where TransformerLens has them.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm


class IOIDataset(Dataset[dict[str, torch.Tensor]]):
    """Indirect object identification prompts (Wang et al. 2022, arXiv 2211.00593).

    Each sample fills a template such as "[A] and [B] went to the [LOCATION] ... [B] gave the
    [OBJECT] to" with two names; the indirect object (``IO``, the answer) is [A], the subject
    (``S``) is [B]. As in TransformerLens, :meth:`get_sample` reseeds Python's ``random`` with 42
    each time, so every sample of one dataset uses the same template, nouns and names (with
    ``symmetric`` the names also appear swapped).

    Args:
        tokenizer: Encodes prompts and answers (``tokenizer.encode``).
        templates: Templates with ``[A]``, ``[B]`` and noun slots.
        names: Names to draw A and B from.
        nouns: Slot name → fillers.
        num_samples: Number of samples.
        symmetric: Add each prompt with A and B swapped.
        prepend_bos: Put BOS in front of each prompt.
    """

    def __init__(
        self,
        tokenizer: Any,
        templates: list[str] | None = None,
        names: list[str] | None = None,
        nouns: dict[str, list[str]] | None = None,
        num_samples: int = 1000,
        symmetric: bool = False,
        prepend_bos: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.prepend_bos = prepend_bos
        self.templates = templates if templates is not None else self.get_default_templates()
        self.names = names if names is not None else self.get_default_names()
        self.nouns = nouns if nouns is not None else self.get_default_nouns()
        self.samples: list[dict[str, str]] = []
        for _ in range(num_samples // 2 if symmetric else num_samples):
            self.samples.extend(self.get_sample(symmetric=symmetric))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        sample = self.samples[idx]
        prompt = self.tokenizer.encode(sample["text"])
        if self.prepend_bos:
            prompt = [self.tokenizer.bos_token_id] + prompt
        return {
            "prompt": torch.LongTensor(prompt),
            "IO": torch.LongTensor(self.tokenizer.encode(sample["IO"])),
            "S": torch.LongTensor(self.tokenizer.encode(sample["S"])),
        }

    def get_sample(self, symmetric: bool = False) -> list[dict[str, str]]:
        """One filled template (two with ``symmetric``): ``{"text", "IO", "S"}``, names spaced.

        Args:
            symmetric: Also return the prompt with the names swapped.

        Returns:
            The samples; ``text`` ends before the answer, ``IO``/``S`` start with a space.
        """
        random.seed(42)
        template: str = random.choice(self.templates)
        for noun_type, noun_list in self.nouns.items():
            template = template.replace(f"[{noun_type}]", random.choice(noun_list))
        names = random.sample(self.names, 2)
        sample = template.replace("[A]", names[0]).replace("[B]", names[1])
        samples = [{"text": sample, "IO": " " + names[0], "S": " " + names[1]}]
        if symmetric:
            swapped = template.replace("[A]", names[1]).replace("[B]", names[0])
            samples.append({"text": swapped, "IO": " " + names[1], "S": " " + names[0]})
        return samples

    @staticmethod
    def get_default_names() -> list[str]:
        """TransformerLens's default names."""
        return ["John", "Mary"]

    @staticmethod
    def get_default_templates() -> list[str]:
        """TransformerLens's default templates (the answer [A] ends each one)."""
        return [
            "[A] and [B] went to the [LOCATION] to buy [OBJECT]. [B] handed the [OBJECT] to [A]",
            "Then, [B] and [A] went to the [LOCATION]. [B] gave the [OBJECT] to [A]",
        ]

    @staticmethod
    def get_default_nouns() -> dict[str, list[str]]:
        """TransformerLens's default fillers per slot."""
        return {"LOCATION": ["store", "market"], "OBJECT": ["milk", "eggs", "bread"]}


@torch.inference_mode()
def ioi_eval(
    model: Any,
    dataset: Any = None,
    batch_size: int = 8,
    num_samples: int = 1000,
    tokenizer: Any = None,
    symmetric: bool = False,
) -> dict[str, float]:
    """Logit difference (IO minus S) and accuracy on indirect object identification.

    Prompts are right-padded with id 0 and run without an attention mask (as TransformerLens; with
    causal attention the padding never reaches the scored position). The score is taken at the
    first token where the IO and S answers differ.

    Args:
        model: The model.
        dataset: Yields ``{"prompt", "IO", "S"}`` token tensors (default: an :class:`IOIDataset`).
        batch_size: Prompts per forward pass.
        num_samples: Size of the default dataset.
        tokenizer: Default ``model.tokenizer``.
        symmetric: For the default dataset.

    Returns:
        ``{"Logit Difference": mean, "Accuracy": fraction with a positive difference}``.
    """
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    if dataset is None:
        dataset = IOIDataset(tokenizer, num_samples=num_samples, symmetric=symmetric)

    def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        prompts = [s["prompt"] for s in samples]
        return {
            "prompt": torch.nn.utils.rnn.pad_sequence(prompts, batch_first=True),
            "IO": [s["IO"] for s in samples],
            "S": [s["S"] for s in samples],
            "prompt_length": [p.shape[0] for p in prompts],
        }

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate)
    total_correct, total_logit_diff = 0, 0.0
    for batch in tqdm(loader, desc="IOI"):
        batch_logits = model(batch["prompt"], return_type="logits")
        for i in range(batch_logits.shape[0]):
            io, s = batch["IO"][i], batch["S"][i]
            prefix_length = batch["prompt_length"][i] - io.shape[0]
            min_len = min(io.shape[0], s.shape[0])
            io, s = io[:min_len], s[:min_len]
            start_idx = torch.where(io != s)[0][0]
            logits = batch_logits[i, prefix_length + start_idx - 1]
            logit_diff = logits[io[start_idx]] - logits[s[start_idx]]
            total_correct += int((logit_diff > 0).item())
            total_logit_diff += logit_diff.item()
    return {
        "Logit Difference": total_logit_diff / len(dataset),
        "Accuracy": total_correct / len(dataset),
    }
