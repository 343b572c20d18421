"""int8 linear layers with one scale per token, for the fast path's decoding steps (CPU).

PyTorch's dynamic quantisation (``quantize_dynamic``) gives each input tensor one scale. A
decoding step's input holds every row of the batch, and a few tokens carry activations many
times larger than the rest (the down projection's input most of all), so one scale for all of
them rounds the others coarsely: 1.27 nats per token from the float model on the default
adapter. :class:`Int8Linear` scales each token (row) of the input on its own and each output
channel of the weight on its own, multiplies in int8 with ``torch._int_mm`` (int32
accumulation) and rescales: 0.013 nats per token (``benchmarks/quant_fidelity.py``).

Imported only where torch is loaded (:class:`~model.fastpath.FastPath`).
"""

from __future__ import annotations

from typing import Any

import torch

# Symmetric int8: values in [-127, 127], so a value and its negation round alike.
_LEVELS = 127.0
_TINY = 1e-8


class Int8Linear(torch.nn.Module):
    """A frozen ``Linear`` whose products run in int8 (weights per channel, inputs per token)."""

    weight_q: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(1).clamp(min=_TINY) / _LEVELS
        quantised = torch.round(weight / scale[:, None]).clamp(-_LEVELS, _LEVELS)
        # Stored (in x out), the layout torch._int_mm multiplies by.
        self.register_buffer("weight_q", quantised.to(torch.int8).t().contiguous())
        self.register_buffer("weight_scale", scale)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.register_buffer("bias", bias)
        self.in_features = linear.in_features
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()
        scale = flat.abs().amax(1, keepdim=True).clamp(min=_TINY) / _LEVELS
        tokens = torch.round(flat / scale).to(torch.int8)
        out = torch._int_mm(tokens, self.weight_q).float() * (scale * self.weight_scale)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def quantise_linears(module: Any) -> Any:
    """Replace every ``Linear`` inside ``module`` (in place) by an :class:`Int8Linear`."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(parent, name, Int8Linear(child))
    return module
