#!/usr/bin/env python3
"""Soft preference labels (a record's "preference" p, or 1 - label_smoothing) in the sigmoid and SimPO losses,
computed with PyTorch autograd from fixed random logits, for DPOObjectiveTests (fixtures/soft_labels/).

Per pair, with delta = (pi_c - r_c) - (pi_r - r_r) (completion log-prob sums) and q = p, else 1 - eps:
    sigmoid  -q log sigmoid(beta delta) - (1 - q) log sigmoid(-beta delta)          (cDPO when q = 1 - eps)
    simpo    -q log sigmoid(x) - (1 - q) log sigmoid(-x) + cpo_alpha NLL,  x = beta (avg pi_c - avg pi_r) - gamma
averaged over the pairs (NLL: -mean log p over the chosen completion tokens). The loss and d loss / d logits are
written for each case, with the logits, ids, completion masks and reference sums they come from.

    /work/venv-builder/bin/python tools/reference_soft_labels.py
"""
import json
import pathlib

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "soft_labels" / "reference.json"
PAIRS, T, V = 3, 6, 11


def inputs():
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(2 * PAIRS, T, V, generator=generator, dtype=torch.float64) * 2
    ids = torch.randint(0, V, (2 * PAIRS, T), generator=generator)
    prompt = [2, 1, 3, 2, 1, 3]
    length = [6, 4, 5, 3, 6, 6]
    mask = torch.zeros(2 * PAIRS, T, dtype=torch.bool)
    for row in range(2 * PAIRS):
        mask[row, prompt[row]:length[row]] = True
    reference = torch.randn(2 * PAIRS, generator=generator, dtype=torch.float64) * 3 - 8
    return logits.float().double(), ids, mask, reference


def sums(logits, ids, mask):
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    m = mask[:, 1:].double()
    return (logp * m).sum(1), m.sum(1), logp, m


def loss_of(case, logits, ids, mask, reference):
    total, counts, per_token, m = sums(logits, ids, mask)
    beta, eps = case["beta"], case["label_smoothing"]
    q = torch.tensor([1 - eps if p is None else p for p in case["preferences"]], dtype=torch.float64)
    if case["loss_type"] == "sigmoid":
        ratios = total - reference
        z = beta * (ratios[:PAIRS] - ratios[PAIRS:])
        return (-q * F.logsigmoid(z) - (1 - q) * F.logsigmoid(-z)).mean()
    average = total / counts.clamp(min=1)
    x = beta * (average[:PAIRS] - average[PAIRS:]) - case["simpo_gamma"]
    loss = (-q * F.logsigmoid(x) - (1 - q) * F.logsigmoid(-x)).mean()
    nll = -(per_token[:PAIRS] * m[:PAIRS]).sum() / m[:PAIRS].sum()
    return loss + case["cpo_alpha"] * nll


def main():
    logits, ids, mask, reference = inputs()
    cases = [
        dict(name="sigmoid-soft", loss_type="sigmoid", beta=0.5, label_smoothing=0.0, preferences=[0.8, None, 0.3]),
        dict(name="sigmoid-cdpo", loss_type="sigmoid", beta=0.5, label_smoothing=0.1, preferences=[None, 1.0, 0.0]),
        dict(name="simpo-soft", loss_type="simpo", beta=2.0, label_smoothing=0.05, preferences=[0.9, None, 0.6],
             simpo_gamma=0.5, cpo_alpha=0.3),
    ]
    results = []
    for case in cases:
        x = logits.clone().requires_grad_(True)
        loss = loss_of(case, x, ids, mask, reference)
        loss.backward()
        results.append(dict(case, loss=loss.item(), d_logits=x.grad.flatten().tolist()))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(dict(
        note="logits [2P, T, V] float32 values stored as doubles; rows 0..P-1 chosen, P..2P-1 rejected; "
             "completion_mask marks completion tokens (scored from the logits at t-1).",
        pairs=PAIRS, length=T, vocabulary=V, logits=logits.flatten().tolist(), ids=ids.flatten().tolist(),
        completion_mask=mask.flatten().int().tolist(), reference=reference.tolist(), cases=results)) + "\n")
    for r in results:
        print(f"{r['name']}: loss {r['loss']:.10f}")


if __name__ == "__main__":
    main()
