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
Writes the loss, metrics and d loss / d policy logits (autograd) per case (fixtures/tdpo/reference.json).

Then a training run of the same formulas (fixtures/tdpo/run/): the tiny Llama, tokenizer, LoRA, B perturbation and
the first three collated batches of tools/reference_dpo.py (fixtures/trl/tokenized.json), TDPO2 (beta 0.1, alpha
0.5), the reference the same PEFT model with its adapter disabled, AdamW (torch, lr 1e-3, no weight decay), gradient
norm clipped at 1; per-step metrics under onnx-dpo's names and the initial and final adapters.

    /work/venv-builder/bin/python tools/reference_tdpo.py
"""
import json
import pathlib
import shutil
import sys

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "tdpo" / "reference.json"
PAIRS, T, V = 3, 6, 13


def tdpo_terms(policy_logits, reference_logits, ids, mask):
    """Per sequence: margin, sequential KL(q || p) and policy log-prob sums over the completion tokens."""
    m = mask[:, 1:].double()
    labels = ids[:, 1:].unsqueeze(-1)
    logp = torch.log_softmax(policy_logits[:, :-1].double(), -1)
    logq = torch.log_softmax(reference_logits[:, :-1].double(), -1)
    kl = (logq.exp() * (logq - logp)).sum(-1)
    margin = ((logp.gather(-1, labels) - logq.gather(-1, labels)).squeeze(-1) * m).sum(1)
    return margin, (kl * m).sum(1), (logp.gather(-1, labels).squeeze(-1) * m).sum(1)


def tdpo_loss(margin, kl, beta, alpha, tdpo2):
    """Loss (mean over pairs) and the metrics, from per-sequence margins and KLs (chosen rows first)."""
    pairs = margin.shape[0] // 2
    mc, mr, kc, kr = margin[:pairs], margin[pairs:], kl[:pairs], kl[pairs:]
    u = mc - mr - (alpha * (kr - kc.detach()) if tdpo2 else (kr - kc))
    loss = -F.logsigmoid(beta * u).mean()
    rc, rr = beta * (mc + kc).detach(), beta * (mr + kr).detach()
    metrics = {"rewards/chosen": rc.mean().item(), "rewards/rejected": rr.mean().item(),
               "rewards/margins": (rc - rr).mean().item(), "rewards/accuracies": (rc > rr).double().mean().item(),
               "kl/chosen": kc.mean().item(), "kl/rejected": kr.mean().item(), "kl/margin": (kc - kr).mean().item()}
    return loss, metrics


def training_run(steps=3, beta=0.1, alpha=0.5):
    import peft
    import transformers
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from make_fixtures import build_model
    from reference_dpo import LORA, check_model_against_onnx, perturb_lora_b, quiet_setup_and_tokenizer, save_peft_adapter

    out = OUT.parent / "run"
    _, _, info = quiet_setup_and_tokenizer()
    model = build_model("llama", info)
    check_model_against_onnx(model)
    transformers.set_seed(42)
    pmodel = peft.get_peft_model(model, peft.LoraConfig(**LORA))
    perturb_lora_b(pmodel)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_peft_adapter(pmodel, out / "initial_adapter")
    parameters = [p for p in pmodel.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.0)
    batches = json.loads((ROOT / "fixtures" / "trl" / "tokenized.json").read_text())["batches"][:steps]
    history = []
    for step, batch in enumerate(batches, start=1):
        ids, attention = torch.tensor(batch["input_ids"]), torch.tensor(batch["attention_mask"])
        mask = torch.tensor(batch["completion_mask"]).bool()
        with torch.no_grad(), pmodel.disable_adapter():
            reference = pmodel(input_ids=ids, attention_mask=attention, use_cache=False).logits
        logits = pmodel(input_ids=ids, attention_mask=attention, use_cache=False).logits
        margin, kl, logps = tdpo_terms(logits, reference, ids, mask)
        loss, metrics = tdpo_loss(margin, kl, beta, alpha, tdpo2=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(parameters, 1.0).item()
        optimizer.step()
        optimizer.zero_grad()
        pairs = ids.shape[0] // 2
        history.append(dict(metrics, step=step, loss=loss.item(), grad_norm=norm, learning_rate=1e-3,
                            **{"logps/chosen": logps[:pairs].mean().item(), "logps/rejected": logps[pairs:].mean().item()}))
        print(f"tdpo2 run step {step}: loss {loss.item():.8f} kl/chosen {metrics['kl/chosen']:.3e} grad_norm {norm:.6f}")
    save_peft_adapter(pmodel, out / "final_adapter")
    (out / "metrics.json").write_text(json.dumps(history, indent=1) + "\n")


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

    cases = []
    for name, tdpo2, beta, alpha in [("tdpo1", False, 0.5, 1.0), ("tdpo2", True, 0.5, 0.5), ("tdpo2-alpha", True, 0.2, 1.5)]:
        x = policy.clone().requires_grad_(True)
        margin, kl, logps = tdpo_terms(x, reference, ids, mask)
        loss, metrics = tdpo_loss(margin, kl, beta, alpha, tdpo2)
        loss.backward()
        metrics.update({"logps/chosen": logps[:PAIRS].mean().item(), "logps/rejected": logps[PAIRS:].mean().item()})
        cases.append(dict(name=name, loss_type="tdpo2" if tdpo2 else "tdpo1", beta=beta, alpha=alpha, loss=loss.item(),
                          metrics=metrics, d_logits=x.grad.flatten().tolist()))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(dict(
        note="policy/reference logits [2P, T, V] (float32 values as doubles); rows 0..P-1 chosen, P..2P-1 rejected.",
        pairs=PAIRS, length=T, vocabulary=V, policy_logits=policy.flatten().tolist(),
        reference_logits=reference.flatten().tolist(), ids=ids.flatten().tolist(),
        completion_mask=mask.flatten().int().tolist(), cases=cases)) + "\n")
    for c in cases:
        print(f"{c['name']}: loss {c['loss']:.10f} kl/chosen {c['metrics']['kl/chosen']:.6f}")
    training_run()


if __name__ == "__main__":
    main()
