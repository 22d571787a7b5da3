#!/usr/bin/env python3
"""Reference numbers for the optimisers, learning-rate schedules and gradient clipping, computed by torch and
transformers themselves (the implementations TRL runs), written to fixtures/optimizers/optimizers.json.

Needs torch and transformers:  python tools/make_optimizer_references.py
"""
import json
import pathlib

import torch
import transformers

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "optimizers" / "optimizers.json"


def optimizer_run(kind, lr, weight_decay, steps=5):
    generator = torch.Generator().manual_seed(3)
    params = {"a": torch.randn(3, 4, generator=generator), "b": torch.randn(5, generator=generator)}
    initial = {name: p.clone().flatten().tolist() for name, p in params.items()}
    tensors = [torch.nn.Parameter(params[name].clone()) for name in ("a", "b")]
    if kind == "adamw":
        optimizer = torch.optim.AdamW(tensors, lr=lr, weight_decay=weight_decay)
    else:
        optimizer = torch.optim.RMSprop(tensors, lr=lr, weight_decay=weight_decay)
    gradients, after = [], []
    for _ in range(steps):
        grads = [torch.randn(t.shape, generator=generator) * 0.5 for t in tensors]
        for tensor, grad in zip(tensors, grads):
            tensor.grad = grad.clone()
        optimizer.step()
        gradients.append({name: g.flatten().tolist() for name, g in zip(("a", "b"), grads)})
        after.append({name: t.detach().flatten().tolist() for name, t in zip(("a", "b"), tensors)})
    return {"optimizer": kind, "lr": lr, "weight_decay": weight_decay,
            "shapes": {"a": [3, 4], "b": [5]}, "initial": initial, "gradients": gradients, "parameters": after}


def schedule_run(name, warmup, total, lr=1e-3):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=lr)
    scheduler = transformers.get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)
    rates = []
    for _ in range(total + 1):
        rates.append(optimizer.param_groups[0]["lr"])  # the rate the next optimizer.step() uses
        optimizer.step()
        scheduler.step()
    return {"schedule": name, "warmup": warmup, "total": total, "peak": lr, "rates": rates}


def clipping_run(max_norm):
    generator = torch.Generator().manual_seed(5)
    tensors = [torch.nn.Parameter(torch.zeros(shape)) for shape in ((4, 3), (7,))]
    for tensor in tensors:
        tensor.grad = torch.randn(tensor.shape, generator=generator) * 2
    before = [t.grad.flatten().tolist() for t in tensors]
    norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    return {"max_norm": max_norm, "gradients": before, "shapes": [[4, 3], [7]],
            "norm": float(norm), "clipped": [t.grad.flatten().tolist() for t in tensors]}


def main():
    reference = {
        "torch": torch.__version__, "transformers": transformers.__version__,
        "optimizers": [optimizer_run("adamw", 1e-3, 0.0), optimizer_run("adamw", 5e-2, 0.1),
                       optimizer_run("rmsprop", 1e-3, 0.0), optimizer_run("rmsprop", 1e-2, 0.05)],
        "schedules": [schedule_run("constant_with_warmup", 3, 10), schedule_run("linear", 2, 10),
                      schedule_run("cosine", 2, 10), schedule_run("constant", 0, 6), schedule_run("linear", 0, 5)],
        "clipping": [clipping_run(1.0), clipping_run(100.0)],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(reference, indent=1))
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
