"""Train the project's small byte-level Llama on Python source code and export it.

Runs on the H100 machine (PyTorch 2.11, no network). Reads the `.py` files of the local Python
installation, keeps a held-out split by file, trains a Llama-architecture model (RMSNorm, RoPE,
grouped-query attention, SwiGLU) with a 4096-byte context for a fixed wall-clock budget, then
exports safetensors + config.json in the Hugging Face Llama layout that kvcache's loader reads.
Before exporting it checks that transformers' LlamaForCausalLM, loading the export, gives the same
logits as the model that was trained.

    python tools/train/train.py --out OUT_DIR [--minutes 8] [--smoke]

Outputs in OUT_DIR: model/ (config.json, model.safetensors, expected logits for a parity test),
heldout.txt (held-out code from permissively licensed packages, with a file index),
loss.csv, train.log.
"""
import argparse, json, math, os, random, sys, sysconfig, site, time, zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BOS, EOS, VOCAB = 256, 257, 260

# Held-out text we ship must come from packages whose licences allow redistribution.
PERMISSIVE = {"numpy", "torch", "transformers", "setuptools", "pip", "sympy", "networkx", "jinja2",
              "requests", "safetensors", "tokenizers", "huggingface_hub", "fsspec", "mpmath",
              "packaging", "yaml", "urllib3", "idna", "charset_normalizer", "filelock", "markupsafe"}


def log(f, *a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    f.write(s + "\n"); f.flush()


# ---------------------------------------------------------------- data

def python_files():
    roots = set(site.getsitepackages()) | {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"]}
    seen, out = set(), []
    for r in sorted(roots):
        for d, _, fs in os.walk(r):
            for f in fs:
                if f.endswith(".py"):
                    p = os.path.join(d, f)
                    rp = os.path.realpath(p)
                    if rp not in seen:
                        seen.add(rp)
                        out.append((r, p))
    out.sort(key=lambda x: x[1])
    return out


def is_heldout(rel):
    return zlib.crc32(rel.encode()) % 50 == 0   # 2% of files, stable across runs


def read(p):
    try:
        with open(p, "rb") as f:
            b = f.read((1 << 20) + 1)
        return b if 200 <= len(b) <= (1 << 20) else None
    except OSError:
        return None


def load_corpus(max_train_bytes, max_heldout_bytes, logf):
    files = python_files()
    train, held = [], []
    for root, p in files:
        rel = os.path.relpath(p, root)
        (held if is_heldout(rel) else train).append((rel, p))
    random.Random(7).shuffle(train)
    log(logf, f"files: {len(train)} train, {len(held)} held-out")

    def gather(items, budget):
        chunks, total, names = [], 0, []
        with ThreadPoolExecutor(32) as ex:
            for i in range(0, len(items), 512):
                batch = items[i:i + 512]
                for (rel, _), b in zip(batch, ex.map(lambda x: read(x[1]), batch)):
                    if b is None:
                        continue
                    chunks.append(bytes([0x0A]) + b)  # placeholder for BOS, replaced below
                    names.append((rel, len(b)))
                    total += len(b) + 1
                if total >= budget:
                    break
        return chunks, names, total

    tr, trn, trt = gather(train, max_train_bytes)
    he, hen, het = gather(held, max_heldout_bytes)
    log(logf, f"train bytes {trt / 1e6:.1f} MB from {len(trn)} files; held-out {het / 1e6:.1f} MB from {len(hen)} files")

    def stream(chunks):
        a = np.frombuffer(b"".join(chunks), dtype=np.uint8).astype(np.int16)
        # every file starts with BOS, as every prompt the library sends starts with BOS
        pos, starts = 0, []
        for c in chunks:
            starts.append(pos); pos += len(c)
        a[np.array(starts, dtype=np.int64)] = BOS
        return a

    return stream(tr), stream(he), held, hen


# Needles: an identifier assigned a random value somewhere in the context and asked for at its end.
# A share of training windows carries one, so the model learns to copy values over long distances;
# kvcache's harness asks with fresh values in held-out code (ModelQuality.needleAccuracy).
PREFIXES = ["key", "secret", "token", "api_key", "user_id", "session", "password", "uid", "ref", "var"]
ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def needle(rng):
    name = rng.choice(PREFIXES) + "_" + "%x" % rng.randrange(0x10, 0x10000)
    n = rng.randrange(6, 13)
    value = "".join(rng.choice(ALNUM if rng.random() < 0.5 else ALNUM[:26]) for _ in range(n))
    return name, value


def batch(data, B, T, rng, nrng, needle_share):
    off = nrng.integers(0, len(data) - T, size=B)
    x = data[off[:, None] + np.arange(T + 1)[None, :]].astype(np.int64)
    x[:, 0] = BOS
    for b in range(B):
        if rng.random() < needle_share:
            name, value = needle(rng)
            assign = np.frombuffer(f'\n{name} = "{value}"\n'.encode(), np.uint8)
            ask = np.frombuffer(f'\n{name} = "{value}"'.encode(), np.uint8)
            at = rng.randrange(8, int(0.9 * T) - len(assign))
            x[b, at:at + len(assign)] = assign
            x[b, T + 1 - len(ask):] = ask
    return torch.from_numpy(x)


# ---------------------------------------------------------------- model

class RMSNorm(nn.Module):
    def __init__(s, d, eps):
        super().__init__(); s.weight = nn.Parameter(torch.ones(d)); s.eps = eps

    def forward(s, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + s.eps)
        return s.weight * h.to(x.dtype)


def rope_tables(T, hd, theta, device):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32, device=device) / hd))
    f = torch.outer(torch.arange(T, dtype=torch.float32, device=device), inv)
    e = torch.cat([f, f], -1)
    return e.cos(), e.sin()


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    rot = torch.cat([-x[..., h:], x[..., :h]], -1)   # Hugging Face's rotate_half convention
    return (x * cos + rot * sin).to(x.dtype)


class Block(nn.Module):
    def __init__(s, c):
        super().__init__()
        d, hd = c["hidden_size"], c["head_dim"]
        s.h, s.kv, s.hd = c["num_attention_heads"], c["num_key_value_heads"], hd
        s.input_layernorm = RMSNorm(d, c["rms_norm_eps"])
        s.q_proj = nn.Linear(d, s.h * hd, bias=False)
        s.k_proj = nn.Linear(d, s.kv * hd, bias=False)
        s.v_proj = nn.Linear(d, s.kv * hd, bias=False)
        s.o_proj = nn.Linear(s.h * hd, d, bias=False)
        s.post_attention_layernorm = RMSNorm(d, c["rms_norm_eps"])
        s.gate_proj = nn.Linear(d, c["intermediate_size"], bias=False)
        s.up_proj = nn.Linear(d, c["intermediate_size"], bias=False)
        s.down_proj = nn.Linear(c["intermediate_size"], d, bias=False)

    def forward(s, x, cos, sin):
        B, T, _ = x.shape
        h = s.input_layernorm(x)
        q = s.q_proj(h).view(B, T, s.h, s.hd).transpose(1, 2)
        k = s.k_proj(h).view(B, T, s.kv, s.hd).transpose(1, 2)
        v = s.v_proj(h).view(B, T, s.kv, s.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rep = s.h // s.kv   # query head i reads KV head i // rep, as transformers' repeat_kv
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + s.o_proj(a.transpose(1, 2).reshape(B, T, s.h * s.hd))
        h = s.post_attention_layernorm(x)
        return x + s.down_proj(F.silu(s.gate_proj(h)) * s.up_proj(h))


class Llama(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.c = c
        s.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        s.layers = nn.ModuleList(Block(c) for _ in range(c["num_hidden_layers"]))
        s.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        s.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        for n, p in s.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * c["num_hidden_layers"]) if n.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                nn.init.normal_(p, 0, std)

    def forward(s, ids):
        T = ids.shape[1]
        cos, sin = rope_tables(T, s.c["head_dim"], s.c["rope_theta"], ids.device)
        x = s.embed_tokens(ids)
        for l in s.layers:
            x = l(x, cos, sin)
        return s.lm_head(s.norm(x))

    def hf_state_dict(s):
        out = {"model.embed_tokens.weight": s.embed_tokens.weight, "model.norm.weight": s.norm.weight,
               "lm_head.weight": s.lm_head.weight}
        for i, l in enumerate(s.layers):
            p = f"model.layers.{i}."
            for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                out[p + "self_attn." + n + ".weight"] = getattr(l, n).weight
            for n in ("gate_proj", "up_proj", "down_proj"):
                out[p + "mlp." + n + ".weight"] = getattr(l, n).weight
            out[p + "input_layernorm.weight"] = l.input_layernorm.weight
            out[p + "post_attention_layernorm.weight"] = l.post_attention_layernorm.weight
        return out


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def heldout_bpb(model, held, T, n, seed, device):
    rng = np.random.default_rng(seed)
    x = batch(held, n, T, random.Random(seed), rng, 0.0).to(device)
    with torch.autocast("cuda", torch.bfloat16):
        logits = model(x[:, :-1])
    return F.cross_entropy(logits.float().reshape(-1, VOCAB), x[:, 1:].reshape(-1)).item() / math.log(2)


@torch.no_grad()
def needle_accuracy(model, held, T, trials, seed, device):
    """Greedy retrieval of an 8-letter value planted at depths 10%..90%, asked for at the end."""
    rng, hits = random.Random(seed), 0
    prompts, answers = [], []
    for i in range(trials):
        value = "".join(rng.choice(ALNUM[:26]) for _ in range(8))
        name = "key_%x" % rng.randrange(0x1000, 0x10000)
        assign = f'\n{name} = "{value}"\n'.encode(); ask = f'\n{name} = "'.encode()
        body = T - 1 - len(assign) - len(ask)
        off = rng.randrange(0, len(held) - body)
        code = held[off:off + body].astype(np.int64).tolist()
        at = int((0.1 + 0.8 * i / max(1, trials - 1)) * body)
        prompts.append([BOS] + code[:at] + list(assign) + code[at:] + list(ask))
        answers.append(list(value.encode()))
    x = torch.tensor(prompts, device=device)
    for _ in range(8):
        with torch.autocast("cuda", torch.bfloat16):
            nxt = model(x)[:, -1].argmax(-1, keepdim=True)
        x = torch.cat([x, nxt], 1)
    got = x[:, -8:].tolist()
    return sum(g == a for g, a in zip(got, answers)) / trials


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--smoke", action="store_true", help="tiny data and a few steps: checks the pipeline")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--needle-share", type=float, default=0.25)
    a = ap.parse_args()
    os.makedirs(a.out + "/model", exist_ok=True)
    logf = open(a.out + "/train.log", "w")
    torch.manual_seed(0)
    device = "cuda"
    T = 4096
    c = dict(vocab_size=VOCAB, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=1, head_dim=64, rms_norm_eps=1e-5, rope_theta=10000.0)
    t0 = time.time()
    train, held, held_files, held_names = load_corpus(8e6 if a.smoke else 800e6, 2e6 if a.smoke else 40e6, logf)
    log(logf, f"data loaded in {time.time() - t0:.0f} s")

    model = Llama(c).to(device)
    nparams = sum(p.numel() for p in model.parameters())
    log(logf, f"params {nparams} ({nparams * 2 / 1e6:.1f} MB in f16); config {c}")
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), fused=True)
    step_fn = torch.compile(model)
    budget = 20 if a.smoke else a.minutes * 60
    nrng, rng = np.random.default_rng(1), random.Random(1)
    loss_csv = open(a.out + "/loss.csv", "w"); loss_csv.write("step,seconds,tokens,train_bpb,heldout_bpb\n")
    start, step, tokens, last_eval = time.time(), 0, 0, 0.0
    nxt = batch(train, a.batch, T, rng, nrng, a.needle_share).pin_memory()
    while True:
        el = time.time() - start
        if el >= budget:
            break
        frac = el / budget
        lr = a.lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        x = nxt.to(device, non_blocking=True)
        nxt = batch(train, a.batch, T, rng, nrng, a.needle_share).pin_memory()
        with torch.autocast("cuda", torch.bfloat16):
            logits = step_fn(x[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1; tokens += a.batch * T
        if el - last_eval >= (5 if a.smoke else 30) or step == 1:
            last_eval = el
            hb = heldout_bpb(model, held, T, 8, 123, device)
            tb = loss.item() / math.log(2)
            loss_csv.write(f"{step},{el:.1f},{tokens},{tb:.4f},{hb:.4f}\n"); loss_csv.flush()
            log(logf, f"step {step} {el:.0f}s tokens {tokens / 1e6:.0f}M lr {lr:.2e} train {tb:.3f} bpb held-out {hb:.3f} bpb")
    train_s = time.time() - start
    hb = heldout_bpb(model, held, T, 32, 456, device)
    acc = needle_accuracy(model, held, T, 20 if a.smoke else 200, 99, device)
    log(logf, f"trained {step} steps, {tokens / 1e6:.0f}M tokens in {train_s:.0f} s; held-out {hb:.4f} bpb; "
              f"needle (PyTorch, bf16, 4K) {acc:.3f}")

    # ---- export in the Hugging Face layout (f16), then check transformers agrees with our model
    model = model.float().eval()
    sd = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in model.hf_state_dict().items()}
    from safetensors.torch import save_file
    save_file(sd, a.out + "/model/model.safetensors", metadata={"format": "pt"})
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
           "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
           "bos_token_id": BOS, "eos_token_id": EOS, "max_position_embeddings": T,
           "torch_dtype": "float16", **c}
    json.dump(cfg, open(a.out + "/model/config.json", "w"), indent=2)
    with torch.no_grad():                     # our model with the exported (f16-rounded) weights
        for k, v in model.hf_state_dict().items():
            v.copy_(sd[k].float())
    from transformers import LlamaForCausalLM
    hf = LlamaForCausalLM.from_pretrained(a.out + "/model", torch_dtype=torch.float32, attn_implementation="eager").to(device).eval()
    ids = batch(held, 1, 512, random.Random(5), np.random.default_rng(5), 0.0)[:, :512].to(device)
    with torch.no_grad():
        ours = model(ids)[0].float()
        theirs = hf(ids).logits[0].float()
    rel = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    log(logf, f"export check: transformers vs trained model, max |diff| / max |logit| = {rel:.2e} over {ids.shape[1]} tokens")
    if rel > 1e-4:
        log(logf, "EXPORT CHECK FAILED"); sys.exit(3)
    # expected logits for kvcache's parity test (first 64 tokens, float32, little endian)
    short = ids[:, :64]
    with torch.no_grad():
        exp = hf(short).logits[0].float().cpu().numpy().astype("<f4")
    exp.tofile(a.out + "/model/expected_logits.f32")
    json.dump({"tokens": short[0].tolist(), "shape": list(exp.shape), "torch": torch.__version__},
              open(a.out + "/model/expected.json", "w"))

    # ---- held-out text we may redistribute: whole files from permissively licensed packages
    kept, size = [], 0
    for name, p in sorted(held_files):
        if name.split(os.sep)[0] in PERMISSIVE:
            b = read(p)
            if b and b"\x00" not in b:
                kept.append((name, b)); size += len(b)
        if size >= 400_000:
            break
    with open(a.out + "/heldout.txt", "wb") as f:
        f.write(b"".join(b for _, b in kept))
    with open(a.out + "/heldout-files.txt", "w") as f:
        for rel, b in kept:
            f.write(f"{rel}\t{len(b)}\n")
    json.dump({"params": nparams, "steps": step, "tokens": tokens, "train_seconds": round(train_s, 1),
               "heldout_bpb": round(hb, 4), "needle_accuracy_pytorch": acc, "export_rel_error": rel,
               "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "config": c},
              open(a.out + "/summary.json", "w"), indent=2)
    log(logf, f"done in {time.time() - t0:.0f} s total")


if __name__ == "__main__":
    main()
