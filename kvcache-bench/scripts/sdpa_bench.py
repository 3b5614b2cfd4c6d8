#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention on the shapes of `kvcache-bench gpu`, on the same card.

Usage: python3 sdpa_bench.py [kvcache gpu.csv]  -- prints SDPA's figures, and when the CSV of
`kvcache-bench gpu --csv` is given, one table with each kvcache figure beside its PyTorch peer.
Batch 1, 32 query heads, 8 KV heads (GQA), dim 128; decode in fp16, prefill causal in fp16 and fp32.
"""
import sys
import torch
import torch.nn.functional as F

HQ, KVH, D = 32, 8, 128
dev = "cuda"


def timed(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]


def decode_us(n):
    q = torch.randn(1, HQ, 1, D, device=dev, dtype=torch.float16)
    k = torch.randn(1, KVH, n, D, device=dev, dtype=torch.float16)
    v = torch.randn(1, KVH, n, D, device=dev, dtype=torch.float16)
    return timed(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), 50)


def prefill_us(n, dtype):
    q = torch.randn(1, HQ, n, D, device=dev, dtype=dtype)
    k = torch.randn(1, KVH, n, D, device=dev, dtype=dtype).repeat_interleave(HQ // KVH, dim=1)
    v = torch.randn(1, KVH, n, D, device=dev, dtype=dtype).repeat_interleave(HQ // KVH, dim=1)
    r = 5 if n <= 4096 else 2
    return timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), r)


def main():
    peers = {}
    for n in (4096, 32768, 131072):
        us = decode_us(n)
        peers[("decode", n)] = (us, 2.0 * n * KVH * D * 2 / us / 1e3)
    for n in (4096, 16384, 32768):
        flops = 4.0 * D * HQ * n * (n + 1) / 2
        for dt, name in ((torch.float16, "fp16"), (torch.float32, "fp32")):
            us = prefill_us(n, dt)
            peers[("prefill " + name, n)] = (us, flops / us / 1e6)
        torch.cuda.empty_cache()
    print(f"\nPyTorch {torch.__version__} SDPA on {torch.cuda.get_device_name()}")
    for (k, n), (us, x) in peers.items():
        unit = "GB/s" if k == "decode" else "TFLOP/s"
        print(f"  {k:14s} {n:7d} {us:10.1f} us {x:9.1f} {unit}")
    if len(sys.argv) > 1:
        print("\nkvcache (OpenCL) beside PyTorch SDPA (same card, same call)")
        print(f"{'kernel':16s} {'tokens':>7s} {'kvcache us':>11s} {'kvcache':>9s} {'SDPA us':>10s} {'SDPA':>9s} {'unit':>8s}")
        for line in open(sys.argv[1]).read().splitlines()[1:]:
            kern, n, us, gbs, tf = line.split(",")
            n = int(n)
            if kern.startswith("decode"):
                pu, px = peers[("decode", n)]
                print(f"{kern:16s} {n:7d} {us:>11s} {gbs:>9s} {pu:10.1f} {px:9.0f} {'GB/s':>8s}  (SDPA dense fp16)")
            else:
                for name in ("fp32", "fp16"):
                    pu, px = peers[("prefill " + name, n)]
                    print(f"{kern:16s} {n:7d} {us:>11s} {tf:>9s} {pu:10.1f} {px:9.1f} {'TFLOP/s':>8s}  (SDPA {name})")


if __name__ == "__main__":
    main()
