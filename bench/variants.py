"""`--variants`: what each CPU optimisation of rlan/model buys, measured by turning one off at a time.

Each variant runs in a fresh interpreter (its own peak RSS) and undoes one optimisation by replacing the
function that carries it with the plain computation it stands for; values stay the same, only time and
memory change. Not every optimisation has a switch: the grouped support keys and the channels-last hidden
state are structural, and their gain is in the before/after table of docs/performance.md.
"""

from __future__ import annotations

import importlib
import json

import torch
import torch.nn.functional as F

from bench.train import measure, parse_shape, shape_parser


def _torch_mask(shape, p: float, device) -> tuple[torch.Tensor, float]:
    return (torch.rand(shape, device=device) >= p).to(torch.uint8), 1.0 / (1.0 - p)


def _call(fn, *args, random: bool = False):
    return fn(*args)


def _always_recompute(pixels: int, fn, *args, random: bool = False):
    from rlan.model.fused import recompute

    return recompute(fn, *args, random=random)


# name -> [(module, attribute path, replacement)]
VARIANTS: dict[str, list[tuple[str, str, object]]] = {
    "all optimisations": [],
    "torch's dropout masks": [
        ("rlan.model.dropout", "dropout", lambda x, p, training: F.dropout(x, p, training)),
        ("rlan.model.fused", "keep_mask", _torch_mask),
    ],
    "autograd's backwards (no fused ops)": [("rlan.model.fused", "_plain", lambda x: True)],
    "no recomputation": [
        ("rlan.model.fused", "recompute", _call),
    ],
    "dense LoRA deltas": [
        ("rlan.model.solver", "lora_terms", lambda lora, target: (getattr(lora, target, None), None))
    ],
    "support embeddings and injector FFN recomputed on every canvas": [
        ("rlan.model.context", "recompute_if_large", _always_recompute)
    ],
    "every step's logits": [("rlan.model.solver", "RecursiveSolver.all_step_logits", True)],
    "canvas groups one after another": [("rlan.model.lanes", "ENABLED", False)],
    "a graph for every step's logits": [("rlan.model.solver", "RecursiveSolver.intermediate_grad", True)],
}


def targets(name: str) -> list[tuple[object, str, object]]:
    """(owner, attribute, replacement) for each attribute variant `name` replaces."""
    found = []
    for module, path, value in VARIANTS[name]:
        owner = importlib.import_module(module)
        *parents, attribute = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        found.append((owner, attribute, value))
    return found


def apply(name: str, set_attribute=setattr) -> None:
    """Turn variant `name` on (set_attribute: pytest's monkeypatch.setattr undoes it after a test)."""
    for owner, attribute, value in targets(name):
        set_attribute(owner, attribute, value)


def main(argv: list[str] | None = None) -> None:
    parser = shape_parser("python -m bench.variants")
    parser.add_argument("--variant", choices=list(VARIANTS), required=True)
    args, shape = parse_shape(parser, argv)
    apply(args.variant)
    result = measure(shape, args.batches, args.repeats, inference=False, flops=False)
    print(json.dumps({**result, "variant": args.variant}))


if __name__ == "__main__":
    main()
