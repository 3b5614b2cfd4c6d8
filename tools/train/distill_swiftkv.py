"""Distil the project's model into a SwiftKV checkpoint, as the SwiftKV paper does.

SwiftKV (arXiv 2410.03960) rewires a model: from layer n = num_key_value_layers on, every token's
keys and values come from the one hidden state entering layer n (RMSNorm `norm_swiftkv`, then the
`k_proj_swiftkv`/`v_proj_swiftkv` of the first layer of each group of key_value_group_size layers,
which share that cache), and those layers' queries come from `q_proj_swiftkv`. Only these new
weights are trained, by distillation: the student's next-byte distribution is pulled towards the
unchanged teacher's (KL divergence) on the same training code. Everything else stays frozen.

    python tools/train/distill_swiftkv.py --base models/kvcache-byte-4m --out OUT [--minutes 3]

Writes OUT/model (config.json in Snowflake's released layout, model.safetensors with the base's
tensors plus the *_swiftkv ones, expected logits of 64 held-out bytes for kvcache's parity test),
OUT/distill.log and OUT/loss.csv.
"""
import argparse, json, math, os, random, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import Llama, RMSNorm, batch, load_corpus, log, rope, rope_tables, VOCAB  # noqa: E402


class SwiftKV(nn.Module):
    """The student: the frozen base plus SingleInputKV projections for layers n..L-1."""

    def __init__(s, base, n, group):
        super().__init__()
        s.base, s.n, s.group = base, n, group
        c = base.c
        L = c["num_hidden_layers"]
        assert 1 <= n < L and (L - n) % group == 0
        s.norm_swiftkv = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        s.norm_swiftkv.weight.data.copy_(base.layers[n].input_layernorm.weight.data)
        s.q = nn.ModuleDict()
        s.k = nn.ModuleDict()
        s.v = nn.ModuleDict()
        for l in range(n, L):
            s.q[str(l)] = nn.Linear(c["hidden_size"], c["num_attention_heads"] * c["head_dim"], bias=False)
            s.q[str(l)].weight.data.copy_(base.layers[l].q_proj.weight.data)
            if (l - n) % group == 0:
                for d, name in ((s.k, "k_proj"), (s.v, "v_proj")):
                    d[str(l)] = nn.Linear(c["hidden_size"], c["num_key_value_heads"] * c["head_dim"], bias=False)
                    d[str(l)].weight.data.copy_(getattr(base.layers[l], name).weight.data)
        for p in base.parameters():
            p.requires_grad_(False)

    def forward(s, ids):
        b, c = s.base, s.base.c
        B, T = ids.shape
        H, KV, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        cos, sin = rope_tables(T, hd, c["rope_theta"], ids.device)
        x = b.embed_tokens(ids)
        for l in range(s.n):
            x = b.layers[l](x, cos, sin)
        single = s.norm_swiftkv(x)       # the one input of every later layer's K/V
        k = v = None
        for l in range(s.n, c["num_hidden_layers"]):
            layer = b.layers[l]
            if (l - s.n) % s.group == 0:
                k = rope(s.k[str(l)](single).view(B, T, KV, hd).transpose(1, 2), cos, sin)
                v = s.v[str(l)](single).view(B, T, KV, hd).transpose(1, 2)
            h = layer.input_layernorm(x)
            q = rope(s.q[str(l)](h).view(B, T, H, hd).transpose(1, 2), cos, sin)
            rep = H // KV
            a = F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), is_causal=True)
            x = x + layer.o_proj(a.transpose(1, 2).reshape(B, T, H * hd))
            h = layer.post_attention_layernorm(x)
            x = x + layer.down_proj(F.silu(layer.gate_proj(h)) * layer.up_proj(h))
        return b.lm_head(b.norm(x))

    def swiftkv_state_dict(s):
        out = {"model.norm_swiftkv.weight": s.norm_swiftkv.weight}
        for l, m in s.q.items():
            out[f"model.layers.{l}.self_attn.q_proj_swiftkv.weight"] = m.weight
        for l, m in s.k.items():
            out[f"model.layers.{l}.self_attn.k_proj_swiftkv.weight"] = m.weight
        for l, m in s.v.items():
            out[f"model.layers.{l}.self_attn.v_proj_swiftkv.weight"] = m.weight
        return out


def load_base(d, device):
    c = json.load(open(os.path.join(d, "config.json")))
    keys = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta"]
    m = Llama({k: c[k] for k in keys})
    sd = load_file(os.path.join(d, "model.safetensors"))
    with torch.no_grad():
        own = m.hf_state_dict()
        assert set(own) == set(sd), set(own) ^ set(sd)
        for k, p in own.items():
            p.copy_(sd[k].float())
    return m.to(device), c, sd


@torch.no_grad()
def bpb(model, held, T, n, seed, device):
    x = batch(held, n, T, random.Random(seed), np.random.default_rng(seed), 0.0).to(device)
    with torch.autocast("cuda", torch.bfloat16):
        logits = model(x[:, :-1])
    return F.cross_entropy(logits.float().reshape(-1, VOCAB), x[:, 1:].reshape(-1)).item() / math.log(2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.out + "/model", exist_ok=True)
    logf = open(a.out + "/distill.log", "w")
    torch.manual_seed(0)
    device, T = "cuda", 4096
    base, cfg, base_sd = load_base(a.base, device)
    L = cfg["num_hidden_layers"]
    n, group = L // 2, 2
    train, held, _, _ = load_corpus(8e6 if a.smoke else 800e6, 2e6 if a.smoke else 40e6, logf)
    student = SwiftKV(base, n, group).to(device)
    trainable = [p for p in student.parameters() if p.requires_grad]
    log(logf, f"SwiftKV n={n} group={group}: {sum(p.numel() for p in trainable)} trainable parameters")
    log(logf, f"before: teacher {bpb(base, held, T, 8, 123, device):.4f} bpb, rewired student {bpb(student, held, T, 8, 123, device):.4f} bpb")
    opt = torch.optim.AdamW(trainable, lr=a.lr, betas=(0.9, 0.95), weight_decay=0.0)
    fwd_s, fwd_t = torch.compile(student), torch.compile(base)
    budget = 20 if a.smoke else a.minutes * 60
    rng, nrng = random.Random(2), np.random.default_rng(2)
    csv = open(a.out + "/loss.csv", "w"); csv.write("step,seconds,kl_bits,heldout_bpb\n")
    start, step, last = time.time(), 0, -1e9
    while time.time() - start < budget:
        el = time.time() - start
        lr = a.lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * el / budget)))
        for g in opt.param_groups:
            g["lr"] = lr
        x = batch(train, a.batch, T, rng, nrng, 0.25).to(device)[:, :-1]
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
            teacher = fwd_t(x).float().log_softmax(-1)
        with torch.autocast("cuda", torch.bfloat16):
            student_logp = fwd_s(x).float().log_softmax(-1)
        loss = F.kl_div(student_logp.reshape(-1, VOCAB), teacher.reshape(-1, VOCAB), log_target=True, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if el - last >= (5 if a.smoke else 20):
            last = el
            hb = bpb(student, held, T, 8, 123, device)
            csv.write(f"{step},{el:.1f},{loss.item() / math.log(2):.5f},{hb:.4f}\n"); csv.flush()
            log(logf, f"step {step} {el:.0f}s lr {lr:.2e} KL {loss.item() / math.log(2):.4f} bits/byte, held-out {hb:.4f} bpb")
    tb, sb = bpb(base, held, T, 32, 456, device), bpb(student, held, T, 32, 456, device)
    log(logf, f"distilled {step} steps in {time.time() - start:.0f} s: held-out teacher {tb:.4f} bpb, student {sb:.4f} bpb")

    # Export: the base's tensors (f16, as shipped) plus the *_swiftkv ones, Snowflake's config keys.
    student = student.float().eval()
    sd = dict(base_sd)
    for k, p in student.swiftkv_state_dict().items():
        sd[k] = p.detach().to(torch.float16).contiguous().cpu()
    save_file(sd, a.out + "/model/model.safetensors", metadata={"format": "pt"})
    out_cfg = dict(cfg)
    out_cfg.update({"architectures": ["LlamaSwiftKVForCausalLM"], "model_type": "llama_swiftkv", "swiftkv": True,
                    "num_key_value_layers": n, "key_value_group_size": group})
    json.dump(out_cfg, open(a.out + "/model/config.json", "w"), indent=2)
    with torch.no_grad():
        for k, p in student.swiftkv_state_dict().items():
            p.copy_(sd[k].float())
        ids = batch(held, 1, 64, random.Random(5), np.random.default_rng(5), 0.0)[:, :64].to(device)
        exp = student(ids)[0].float().cpu().numpy().astype("<f4")
    exp.tofile(a.out + "/model/expected_logits.f32")
    json.dump({"tokens": ids[0].tolist(), "shape": list(exp.shape), "torch": torch.__version__,
               "note": "student logits in float32 with the exported (f16) weights; every token runs every layer"},
              open(a.out + "/model/expected.json", "w"))
    json.dump({"steps": step, "seconds": round(time.time() - start, 1), "teacher_heldout_bpb": round(tb, 4),
               "student_heldout_bpb": round(sb, 4), "num_key_value_layers": n, "key_value_group_size": group,
               "gpu": torch.cuda.get_device_name(), "torch": torch.__version__},
              open(a.out + "/summary.json", "w"), indent=2)
    log(logf, "done")


if __name__ == "__main__":
    main()
