#!/usr/bin/env python3
"""TDPO1 and TDPO2 (Zeng et al. 2024, arXiv 2404.11999, "Token-level Direct Preference Optimization") written from
the paper's formulas in PyTorch, on fixed random policy and reference logits, for TDPOTests (fixtures/tdpo/).

At every completion token t (scored from the logits at t-1), with p the policy's and q the reference's next-token
distributions over the whole vocabulary:
    margin(y) = sum_t log p(y_t) - log q(y_t)
    kl(y)     = sum_t KL(q || p) = sum_t sum_v q_v (log q_v - log p_v)          (sequential KL, reference first)
    TDPO1: u = margin(c) - margin(r) - (kl(r) - kl(c))
    TDPO2: u = margin(c) - margin(r) - alpha (kl(r) - stopgrad(kl(c)))
    loss  = mean over pairs of -log sigmoid(beta u); rewards beta (margin + kl)
Writes the loss, metrics and d loss / d policy logits (autograd) per case.

    /work/venv-builder/bin/python tools/reference_tdpo.py
"""
import json
import pathlib

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "tdpo" / "reference.json"
PAIRS, T, V = 3, 6, 13


def main():
    generator = torch.Generator().manual_seed(11)
    policy = (torch.randn(2 * PAIRS, T, V, generator=generator) * 1.5).double()
    reference = (policy.float() + torch.randn(2 * PAIRS, T, V, generator=generator).double().float() * 0.7).double()
    ids = torch.randint(0, V, (2 * PAIRS, T), generator=generator)
    prompt = [1, 2, 3, 1, 2, 2]
    length = [6, 5, 6, 4, 6, 3]
    mask = torch.zeros(2 * PAIRS, T, dtype=torch.bool)
    for row in range(2 * PAIRS):
        mask[row, prompt[row]:length[row]] = True

    def terms(policy_logits):
        m = mask[:, 1:].double()
        labels = ids[:, 1:].unsqueeze(-1)
        logp = torch.log_softmax(policy_logits[:, :-1], -1)
        logq = torch.log_softmax(reference[:, :-1], -1)
        kl = (logq.exp() * (logq - logp)).sum(-1)
        margin = ((logp.gather(-1, labels) - logq.gather(-1, labels)).squeeze(-1) * m).sum(1)
        return margin, (kl * m).sum(1), (logp.gather(-1, labels).squeeze(-1) * m).sum(1)

    cases = []
    for name, tdpo2, beta, alpha in [("tdpo1", False, 0.5, 1.0), ("tdpo2", True, 0.5, 0.5), ("tdpo2-alpha", True, 0.2, 1.5)]:
        x = policy.clone().requires_grad_(True)
        margin, kl, logps = terms(x)
        mc, mr, kc, kr = margin[:PAIRS], margin[PAIRS:], kl[:PAIRS], kl[PAIRS:]
        u = mc - mr - (alpha * (kr - kc.detach()) if tdpo2 else (kr - kc))
        loss = -F.logsigmoid(beta * u).mean()
        loss.backward()
        rc, rr = beta * (mc + kc).detach(), beta * (mr + kr).detach()
        cases.append(dict(
            name=name, loss_type="tdpo2" if tdpo2 else "tdpo1", beta=beta, alpha=alpha, loss=loss.item(),
            metrics={"rewards/chosen": rc.mean().item(), "rewards/rejected": rr.mean().item(),
                     "rewards/margins": (rc - rr).mean().item(), "rewards/accuracies": (rc > rr).double().mean().item(),
                     "logps/chosen": logps[:PAIRS].mean().item(), "logps/rejected": logps[PAIRS:].mean().item(),
                     "kl/chosen": kc.mean().item(), "kl/rejected": kr.mean().item(),
                     "kl/margin": (kc - kr).mean().item()},
            d_logits=x.grad.flatten().tolist()))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(dict(
        note="policy/reference logits [2P, T, V] (float32 values as doubles); rows 0..P-1 chosen, P..2P-1 rejected.",
        pairs=PAIRS, length=T, vocabulary=V, policy_logits=policy.flatten().tolist(),
        reference_logits=reference.flatten().tolist(), ids=ids.flatten().tolist(),
        completion_mask=mask.flatten().int().tolist(), cases=cases)) + "\n")
    for c in cases:
        print(f"{c['name']}: loss {c['loss']:.10f} kl/chosen {c['metrics']['kl/chosen']:.6f}")


if __name__ == "__main__":
    main()
