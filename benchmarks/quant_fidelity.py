"""How far int8 dynamic quantisation moves the model's next-token distributions.

    .venv/bin/python benchmarks/quant_fidelity.py [--adapter PATH] [--genres 400] [--threads 2]

The merged adapter in fp32 is the reference. For each variant (bf16, and int8 dynamic
quantisation of the ``Linear`` layers per tensor or per channel, with or without some layers
left out), it scores real genres from ``../shared/data/genres.csv`` in the training format
(plain ``genre:`` examples and ``like:`` pairs). Over the positions that predict the completion
(the genre and its end marker), it prints the mean KL divergence per token from the reference,
the mean absolute change of each completion's summed log-probability (what the weirdness bands
rank by), and how often the most likely next token is the same. With the adapter's
``head_tokens.json``, also how much of the reference's next-token mass lies outside the
restricted head (``[model] restrict_head``).

A second measure follows the fast path's own regime: the prompt "genre:" runs once, its cache
is copied to every example's row, and the completion is fed one token per step (a step's input
holds one token of each row, as in sampling). ``steps_kl_per_token`` is the mean KL from the
reference over those steps, with the prompt run by the reference (or, for the variant that is
``[model] quantize`` on a bf16 CPU, by the bf16 model, as the sampler does).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def examples(count: int, seed: int) -> list[str]:
    with (SHARED / "genres.csv").open(encoding="utf-8", newline="") as fh:
        names = sorted({row["genre"] for row in csv.DictReader(fh)})
    drawn = random.Random(seed).sample(names, count)
    plain = drawn[: count * 3 // 4]
    pairs = drawn[count * 3 // 4 :]
    half = len(pairs) // 2
    return [f"genre: {n}\n" for n in plain] + [
        f"like: {a}\ngenre: {b}\n" for a, b in zip(pairs[:half], pairs[half:], strict=False)
    ]


def main() -> None:
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    from model.artifacts import DEFAULT_ADAPTER_DIR
    from model.base import ModelSpec
    from model.fastpath import FastSettings, head_tokens, plain_copy
    from model.int8 import quantise_linears
    from model.sampler import Sampler

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", default=str(DEFAULT_ADAPTER_DIR))
    parser.add_argument("--genres", type=int, default=400)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    args = parser.parse_args()
    if not (SHARED / "genres.csv").is_file():
        sys.exit(f"quant_fidelity: {SHARED / 'genres.csv'} is missing")

    spec = ModelSpec(threads=args.threads)
    sampler = Sampler.load(spec, args.adapter, data_dir=args.data_dir, fast=FastSettings())
    torch.set_num_threads(args.threads)
    reference = plain_copy(sampler.model).float().eval()
    texts = examples(args.genres, args.seed)
    enc = sampler.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    # The positions that predict a completion token (the genre and its end marker, after the
    # last "genre:"): what sampling draws from. Rows are left-padded.
    length = ids.shape[1]
    valid = torch.zeros_like(mask, dtype=torch.bool)
    for row, text in enumerate(texts):
        prompt = text[: text.rindex("genre:") + len("genre:")]
        prompt_tokens = len(sampler.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        start = length - int(mask[row].sum()) + prompt_tokens - 1
        valid[row, start : length - 1] = True

    def log_probs(model: Any) -> Any:
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), 64):
                logits = model(input_ids=ids[i : i + 64], attention_mask=mask[i : i + 64]).logits
                out.append(torch.log_softmax(logits.float(), -1))
        return torch.cat(out)

    ref = log_probs(reference)
    following = ids[:, 1:, None]
    scored = valid[:, :-1]

    def completion_logp(lp: Any) -> Any:
        """Each example's summed log-probability of its completion."""
        return (lp[:, :-1].gather(-1, following).squeeze(-1) * scored).sum(1)

    ref_seq = completion_logp(ref)

    def quantised(qconfig: Any, skip: tuple[str, ...] = ()) -> Any:
        model = copy.deepcopy(reference)
        layers = {
            name: qconfig
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not any(k in name for k in skip)
        }
        return torch.ao.quantization.quantize_dynamic(model, layers, dtype=torch.qint8)

    # The steps' regime: plain examples, the prompt once, one token per row per step.
    tok = sampler.tokenizer
    prompt = tok("genre:", return_tensors="pt", add_special_tokens=False)["input_ids"]
    completions = [
        tok(text[len("genre:") :], add_special_tokens=False)["input_ids"]
        for text in texts
        if text.startswith("genre:")
    ]
    steps = max(map(len, completions))
    step_ids = torch.zeros(len(completions), steps, dtype=torch.long)
    step_valid = torch.zeros(len(completions), steps, dtype=torch.bool)
    for row, completion in enumerate(completions):
        step_ids[row, : len(completion)] = torch.tensor(completion)
        step_valid[row, : len(completion)] = True

    def step_log_probs(model: Any, prompt_model: Any) -> Any:
        with torch.inference_mode():
            out = prompt_model(input_ids=prompt, use_cache=True)
            cache = out.past_key_values
            cache.batch_repeat_interleave(len(completions))
            first = torch.log_softmax(out.logits[:, -1].float(), -1)
            lps = [first.expand(len(completions), -1)]
            for t in range(steps - 1):
                out = model(input_ids=step_ids[:, t : t + 1], past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                lps.append(torch.log_softmax(out.logits[:, -1].float(), -1))
        return torch.stack(lps, 1)

    step_ref = step_log_probs(reference, reference)

    def per_token(dtype: Any) -> Any:
        model = copy.deepcopy(reference)
        quantise_linears(model.get_decoder())  # the head stays in full precision
        return model.to(dtype)

    bf16 = copy.deepcopy(reference).to(torch.bfloat16)
    # name: (build the variant, the model that runs the prompt in the steps' regime)
    variants = {
        "bf16": (lambda: bf16, bf16),
        "int8 per tensor": (lambda: quantised(default_dynamic_qconfig), reference),
        "int8 per channel": (lambda: quantised(per_channel_dynamic_qconfig), reference),
        "int8 per tensor, head kept": (
            lambda: quantised(default_dynamic_qconfig, ("lm_head",)),
            reference,
        ),
        "int8 per tensor, head and down_proj kept": (
            lambda: quantised(default_dynamic_qconfig, ("lm_head", "down_proj")),
            reference,
        ),
        "int8 per token (fp32)": (lambda: per_token(torch.float32), reference),
        "int8 per token in bf16, bf16 prompt ([model] quantize)": (
            lambda: per_token(torch.bfloat16),
            bf16,
        ),
    }
    report: dict[str, Any] = {"adapter": args.adapter, "examples": len(texts), "variants": {}}
    for name, (build, prompt_model) in variants.items():
        model = build()
        start = time.perf_counter()
        lp = log_probs(model)
        seconds = time.perf_counter() - start
        seq = completion_logp(lp)
        step_lp = step_log_probs(model, prompt_model)
        step_kl = (step_ref.exp() * (step_ref - step_lp)).sum(-1)[step_valid].mean().item()
        row = {
            "kl_per_token": round((ref.exp() * (ref - lp)).sum(-1)[valid].mean().item(), 5),
            "mean_abs_seq_logp_change": round((ref_seq - seq).abs().mean().item(), 3),
            "top1_agreement": round(
                (ref.argmax(-1) == lp.argmax(-1))[valid].float().mean().item(), 4
            ),
            "steps_kl_per_token": round(step_kl, 5),
            "scoring_s": round(seconds, 1),
        }
        report["variants"][name] = row
        print(name, row, file=sys.stderr, flush=True)
    keep = head_tokens(args.adapter)
    if keep is not None:
        # The restricted head samples from the reference renormalised over its tokens: its KL
        # from the reference is -log(the mass it keeps), at each position.
        kept = ref[..., torch.tensor(keep)].exp().sum(-1)[valid]
        report["restricted_head"] = {
            "tokens": len(keep),
            "mean_mass_outside": round((1 - kept).mean().item(), 5),
            "max_mass_outside": round((1 - kept).max().item(), 4),
            "kl_per_token": round((-kept.log()).mean().item(), 5),
        }
        print("restricted head", report["restricted_head"], file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
