// kvcache attention kernels. Built once per context with these defines:
//   D      channels per head          G    query heads per KV head (GQA group)
//   KVH    KV heads per layer         WG   work-group size of decode_partial (power of two)
//   CHUNK  most tokens one decode work-group takes (its scores live in local memory)
//
// Device layout of one layer (see DeviceKVCache): pages of 16 slots per KV head, each page
// 2*D*16 halves: the keys transposed (k[c*16 + j]) then the values row-major (v[j*D + c]); positions
// pos[slot], shared by the layer's KV heads. Halves are stored and read with vload_half, so no
// cl_khr_fp16 is needed (the H100's OpenCL has none). Arithmetic is f32.

#define PT 16
#define PAGE_HALVES (2 * D * PT)

// Scatters staged tokens (binary16 bits, [t][kvh][k|v][D]) into their slots.
__kernel void append_kv(__global ushort* kv, __global int* pos, __global const ushort* stage,
                        __global const int* stagePos, int start, int tokens, int capPages) {
  int idx = get_global_id(0);
  if (idx >= tokens * KVH * D) return;
  int c = idx % D;
  int h = (idx / D) % KVH;
  int t = idx / (D * KVH);
  int slot = start + t;
  size_t base = ((size_t) h * capPages + (slot >> 4)) * PAGE_HALVES;
  int j = slot & 15;
  size_t src = ((size_t) t * KVH + h) * 2 * D;
  kv[base + c * PT + j] = stage[src + c];
  kv[base + D * PT + j * D + c] = stage[src + D + c];
  if (h == 0 && c == 0) pos[slot] = stagePos[t];
}

// Physical page of logical page p of KV head h: dense reads pages in order, sparse through a map.
#ifdef SPARSE
#define PAGE_OF(h, p) pageMap[(h) * mapStride + (p)]
#else
#define PAGE_OF(h, p) (p)
#endif

// Flash-decoding, pass 1: work-group (split, h) takes `chunk` tokens of KV head h for its whole
// group of G query heads, so each key and value is read once per group. Scores stay in local memory;
// the split's max m, sum l and unnormalised output go to part[h][split][g][D+2].
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void decode_partial(__global const half* kv, __global const int* pos, int n, int capPages,
                    __global const float* q, float scale, int qpos, int chunk,
                    __global const int* pageMap, int mapStride, int nSlots, __global float* part) {
  __local float qs[G * D];
  __local float s[G * CHUNK];
  __local float red[G * WG];
  const int lid = get_local_id(0);
  const int split = get_group_id(0);
  const int h = get_group_id(1);
  const int nsplit = get_num_groups(0);
  for (int i = lid; i < G * D; i += WG) qs[i] = q[h * G * D + i] * scale;
  barrier(CLK_LOCAL_MEM_FENCE);

  const int start = split * chunk;
  const int len = min(chunk, n - start);
  // Scores: a work-item takes four neighbouring tokens of a page (start and chunk are multiples of 4,
  // so they share a page), reading 8 bytes per channel; a warp reads 8 pages' worth per load.
  float mx[G];
  for (int g = 0; g < G; g++) mx[g] = -INFINITY;
  for (int i = lid * 4; i < len; i += WG * 4) {
    int tok = start + i;
    int page = PAGE_OF(h, tok >> 4);
    int j = tok & 15;
    __global const half* kp = kv + ((size_t) h * capPages + page) * PAGE_HALVES + j;
    float4 acc[G];
    for (int g = 0; g < G; g++) acc[g] = (float4) (0.0f);
#pragma unroll 4
    for (int c = 0; c < D; c += 4) {
      float4 k0 = vload_half4(0, kp + c * PT);
      float4 k1 = vload_half4(0, kp + (c + 1) * PT);
      float4 k2 = vload_half4(0, kp + (c + 2) * PT);
      float4 k3 = vload_half4(0, kp + (c + 3) * PT);
      for (int g = 0; g < G; g++) {
        float4 qq = vload4(0, qs + g * D + c);
        acc[g] = mad((float4) (qq.s0), k0, mad((float4) (qq.s1), k1, mad((float4) (qq.s2), k2,
                 mad((float4) (qq.s3), k3, acc[g]))));
      }
    }
    int slot = page * PT + j;
    // Slots past the chunk, past the written slots (a sparse map may name the last, partly filled
    // page) or after the query are not visible; select() never lets their garbage through.
    int4 vis = (int4) (i, i + 1, i + 2, i + 3) < (int4) (len) && (int4) (slot, slot + 1, slot + 2, slot + 3) < (int4) (nSlots);
    int4 kpos = (int4) (INT_MAX);
    if (vis.s0) kpos.s0 = pos[slot];
    if (vis.s1) kpos.s1 = pos[slot + 1];
    if (vis.s2) kpos.s2 = pos[slot + 2];
    if (vis.s3) kpos.s3 = pos[slot + 3];
    vis = vis && kpos <= (int4) (qpos);
    for (int g = 0; g < G; g++) {
      float4 v = select((float4) (-INFINITY), acc[g], vis);
      vstore4(v, 0, s + g * CHUNK + i);
      mx[g] = fmax(mx[g], fmax(fmax(v.s0, v.s1), fmax(v.s2, v.s3)));
    }
  }
  for (int g = 0; g < G; g++) red[g * WG + lid] = mx[g];
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int o = WG / 2; o > 0; o >>= 1) {
    if (lid < o) {
      for (int g = 0; g < G; g++) red[g * WG + lid] = fmax(red[g * WG + lid], red[g * WG + lid + o]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  float m[G];
  for (int g = 0; g < G; g++) m[g] = red[g * WG];
  barrier(CLK_LOCAL_MEM_FENCE);

  float sum[G];
  for (int g = 0; g < G; g++) sum[g] = 0.0f;
  for (int i = lid; i < len; i += WG) {
    for (int g = 0; g < G; g++) {
      float sv = s[g * CHUNK + i];
      float p = sv == -INFINITY ? 0.0f : exp(sv - m[g]);
      s[g * CHUNK + i] = p;
      sum[g] += p;
    }
  }
  for (int g = 0; g < G; g++) red[g * WG + lid] = sum[g];
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int o = WG / 2; o > 0; o >>= 1) {
    if (lid < o) {
      for (int g = 0; g < G; g++) red[g * WG + lid] += red[g * WG + lid + o];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }

  // Values: D/4 work-items per token, each four channels (8-byte loads, a warp reads a whole 256-byte
  // row at D = 128); the work-group runs WG/(D/4) token streams, merged through local memory after.
  const int TPT = D / 4;
  const int STREAMS = WG / TPT;
  const int stream = lid / TPT;
  const int cb = (lid % TPT) * 4;
  float4 o[G];
  for (int g = 0; g < G; g++) o[g] = (float4) (0.0f);
#pragma unroll 4
  for (int i = stream; i < len; i += STREAMS) {
    int tok = start + i;
    int page = PAGE_OF(h, tok >> 4);
    int slot = page * PT + (tok & 15);
    if (slot < nSlots) { // never-written slots may hold NaN bits
      float4 v = vload_half4(0, kv + ((size_t) h * capPages + page) * PAGE_HALVES + D * PT + (tok & 15) * D + cb);
      for (int g = 0; g < G; g++) o[g] = mad((float4) (s[g * CHUNK + i]), v, o[g]);
    }
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int g = 0; g < G; g++) vstore4(o[g], 0, s + (stream * G + g) * D + cb);
  barrier(CLK_LOCAL_MEM_FENCE);
  const size_t out0 = ((size_t) h * nsplit + split) * G * (D + 2);
  for (int x = lid; x < G * D; x += WG) {
    int g = x / D, c = x % D;
    float acc = 0.0f;
    for (int st = 0; st < STREAMS; st++) acc += s[(st * G + g) * D + c];
    part[out0 + g * (D + 2) + c] = acc;
  }
  if (lid == 0) {
    for (int g = 0; g < G; g++) {
      part[out0 + g * (D + 2) + D] = m[g];
      part[out0 + g * (D + 2) + D + 1] = red[g * WG];
    }
  }
}

// Flash-decoding, pass 2: work-group = one query head, a work-item per channel; merges the splits.
__kernel void decode_reduce(__global const float* part, int nsplit, __global float* out) {
  const int hq = get_group_id(0);
  const int c = get_local_id(0);
  const int h = hq / G, g = hq % G;
  float M = -INFINITY;
  for (int sp = 0; sp < nsplit; sp++) M = fmax(M, part[(((size_t) h * nsplit + sp) * G + g) * (D + 2) + D]);
  float L = 0.0f, o = 0.0f;
  if (M != -INFINITY) {
    for (int sp = 0; sp < nsplit; sp++) {
      size_t b = (((size_t) h * nsplit + sp) * G + g) * (D + 2);
      float w = exp(part[b + D] - M); // a split that saw nothing has m = -inf: weight 0
      L = mad(w, part[b + D + 1], L);
      o = mad(w, part[b + c], o);
    }
  }
  if (c < D) out[hq * D + c] = L > 0.0f ? o / L : 0.0f;
}

// Causal prefill attention, flash style, f32 arithmetic. Work-group (query block, query head): 32
// query rows against one page (16 keys) at a time, keys and values staged in local memory, online
// softmax per row. GQA: query head hq reads KV head hq / G. Work-group of 128: thread (r, lane) owns
// row r = lid / 4; it scores keys 4*lane..4*lane+3 and accumulates the output channels
// 4*(lane + 4*i) .. +3, so that the four lanes of a row read neighbouring 16-byte words of local
// memory (no bank conflicts) and every local read feeds four or more multiply-adds.
#define BQ 32
#define QS_STRIDE (D + 4)
__kernel __attribute__((reqd_work_group_size(128, 1, 1)))
void prefill(__global const half* kv, __global const int* pos, int n, int capPages,
             __global const float* q, __global const int* qpos, int tokens, float scale,
             __global float* out) {
  __local float Qs[BQ * QS_STRIDE];
  __local float Ks[D * PT];
  __local float Vs[PT * D];
  __local float S[BQ * PT];
  __local float alpha[BQ], lsum[BQ], mrow[BQ];
  __local int kpos[PT], rowpos[BQ];
  const int lid = get_local_id(0);
  const int t0 = get_group_id(0) * BQ;
  const int hq = get_group_id(1);
  const int h = hq / G;
  const int HQ = KVH * G;
  for (int i = lid; i < BQ * D; i += 128) {
    int r = i / D, c = i % D, t = t0 + r;
    Qs[r * QS_STRIDE + c] = t < tokens ? q[((size_t) t * HQ + hq) * D + c] * scale : 0.0f;
  }
  if (lid < BQ) {
    rowpos[lid] = t0 + lid < tokens ? qpos[t0 + lid] : INT_MIN;
    mrow[lid] = -INFINITY;
    lsum[lid] = 0.0f;
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  int maxPos = INT_MIN;
  for (int r = 0; r < BQ; r++) maxPos = max(maxPos, rowpos[r]);

  const int r = lid >> 2, lane = lid & 3;
  float4 o[D / 16];
  for (int i = 0; i < D / 16; i++) o[i] = (float4) (0.0f);
  const int pages = (n + PT - 1) / PT;
  for (int p = 0; p < pages; p++) {
    if (lid < PT) kpos[lid] = p * PT + lid < n ? pos[p * PT + lid] : INT_MAX;
    barrier(CLK_LOCAL_MEM_FENCE);
    int pmin = INT_MAX;
    for (int j = 0; j < PT; j++) pmin = min(pmin, kpos[j]);
    if (pmin > maxPos) { // wholly in every row's future (or empty): uniform across the group
      barrier(CLK_LOCAL_MEM_FENCE);
      continue;
    }
    __global const half* src = kv + ((size_t) h * capPages + p) * PAGE_HALVES;
    for (int i = lid * 4; i < D * PT; i += 512) {
      vstore4(vload_half4(0, src + i), 0, Ks + i);
      // Slots past n were never written: their bits may be NaN, and 0 * NaN would poison the row.
      float4 v = p * PT + i / D < n ? vload_half4(0, src + D * PT + i) : (float4) (0.0f);
      vstore4(v, 0, Vs + i);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float4 acc = (float4) (0.0f);
    for (int c = 0; c < D; c += 4) {
      float4 qq = vload4(0, Qs + r * QS_STRIDE + c);
      acc = mad((float4) (qq.s0), vload4(0, Ks + c * PT + lane * 4), acc);
      acc = mad((float4) (qq.s1), vload4(0, Ks + (c + 1) * PT + lane * 4), acc);
      acc = mad((float4) (qq.s2), vload4(0, Ks + (c + 2) * PT + lane * 4), acc);
      acc = mad((float4) (qq.s3), vload4(0, Ks + (c + 3) * PT + lane * 4), acc);
    }
    int rp = rowpos[r];
    int4 kp4 = vload4(0, kpos + lane * 4);
    acc.s0 = kp4.s0 <= rp ? acc.s0 : -INFINITY;
    acc.s1 = kp4.s1 <= rp ? acc.s1 : -INFINITY;
    acc.s2 = kp4.s2 <= rp ? acc.s2 : -INFINITY;
    acc.s3 = kp4.s3 <= rp ? acc.s3 : -INFINITY;
    vstore4(acc, 0, S + r * PT + lane * 4);
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid < BQ) {
      float mold = mrow[lid];
      float pm = -INFINITY;
      for (int j = 0; j < PT; j++) pm = fmax(pm, S[lid * PT + j]);
      float mnew = fmax(mold, pm);
      float a = 1.0f, l = lsum[lid];
      if (mnew != -INFINITY) {
        a = mold == -INFINITY ? 0.0f : exp(mold - mnew);
        l *= a;
        for (int j = 0; j < PT; j++) {
          float sv = S[lid * PT + j];
          float e = sv == -INFINITY ? 0.0f : exp(sv - mnew);
          S[lid * PT + j] = e;
          l += e;
        }
      } else {
        for (int j = 0; j < PT; j++) S[lid * PT + j] = 0.0f;
      }
      alpha[lid] = a;
      mrow[lid] = mnew;
      lsum[lid] = l;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float a = alpha[r];
    for (int i = 0; i < D / 16; i++) o[i] *= a;
    for (int j = 0; j < PT; j += 4) {
      float4 pj = vload4(0, S + r * PT + j);
      for (int i = 0; i < D / 16; i++) {
        int c = 4 * (lane + 4 * i);
        float4 x = o[i];
        x = mad((float4) (pj.s0), vload4(0, Vs + j * D + c), x);
        x = mad((float4) (pj.s1), vload4(0, Vs + (j + 1) * D + c), x);
        x = mad((float4) (pj.s2), vload4(0, Vs + (j + 2) * D + c), x);
        x = mad((float4) (pj.s3), vload4(0, Vs + (j + 3) * D + c), x);
        o[i] = x;
      }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  int t = t0 + r;
  if (t < tokens) {
    float L = lsum[r];
    float inv = L > 0.0f ? 1.0f / L : 0.0f;
    for (int i = 0; i < D / 16; i++) {
      vstore4(o[i] * inv, 0, out + ((size_t) t * HQ + hq) * D + 4 * (lane + 4 * i));
    }
  }
}

// ---- Top-k sparse decode (RocketKV stage 2 / Quest bounds) ----

// Element-wise min and max of the keys of pages [firstPage, firstPage + pages) of every KV head, over
// the slots written so far, as halves (exact: the keys are halves), channel-major so that the page
// scorer's neighbouring work-items (pages) read neighbouring words: summ[h][c][min|max][capPages].
__kernel void page_summary(__global const half* kv, int nSlots, int capPages, int firstPage, int pages,
                           __global half* summ) {
  int idx = get_global_id(0);
  if (idx >= pages * KVH * D) return;
  int c = idx % D;
  int h = (idx / D) % KVH;
  int p = firstPage + idx / (D * KVH);
  __global const half* kp = kv + ((size_t) h * capPages + p) * PAGE_HALVES + c * PT;
  float lo = INFINITY, hi = -INFINITY;
  int valid = min(PT, nSlots - p * PT);
  for (int j = 0; j < valid; j++) {
    float k = vload_half(j, kp);
    lo = fmin(lo, k);
    hi = fmax(hi, k);
  }
  size_t o = (((size_t) h * D + c) * 2) * capPages + p;
  vstore_half(lo, o, summ);
  vstore_half(hi, o + capPages, summ);
}

// Approximate page scores for KV head h, summed over its query heads: with only the R channels of
// largest |q| per head (chosen on the host), the Quest upper bound sum_c max(q_c min_c, q_c max_c).
// The last `recentPages` pages score +inf, so they are always selected.
__kernel void page_scores(__global const half* summ, int capPages, int pages, __global const float* q,
                          __global const int* channels, int R, int recentPages, __global float* scores) {
  int p = get_global_id(0);
  int h = get_global_id(1);
  if (p >= pages) return;
  float est = 0.0f;
  for (int g = 0; g < G; g++) {
    int hq = h * G + g;
    for (int i = 0; i < R; i++) {
      int c = channels[hq * R + i];
      float qc = q[hq * D + c];
      size_t o = (((size_t) h * D + c) * 2) * capPages + p;
      est += fmax(qc * vload_half(o, summ), qc * vload_half(o + capPages, summ));
    }
  }
  scores[(size_t) h * capPages + p] = p >= pages - recentPages ? INFINITY : est;
}

// Order-preserving map of a float onto an unsigned integer.
inline uint ordered(float f) {
  uint b = as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Top-k pages of KV head h (one work-group of 256 per head): the k-th largest key is found bit by
// bit from the top (32 counting passes over the scores), then the pages above it, and as many equal
// to it as fit, are written to map[h][0..k). Order within the map does not matter to attention.
// Up to TOPK_LOCAL pages (128K tokens) the keys are held in local memory for the 32 passes.
#define TOPK_LOCAL 8192
__kernel __attribute__((reqd_work_group_size(256, 1, 1)))
void topk_pages(__global const float* scores, int capPages, int pages, int k, __global int* map) {
  __local uint cnt[256];
  __local uint above, equal;
  __local uint lk[TOPK_LOCAL];
  const int lid = get_local_id(0);
  const int h = get_group_id(0);
  __global const float* sc = scores + (size_t) h * capPages;
  const bool inLocal = pages <= TOPK_LOCAL;
  if (inLocal) {
    for (int i = lid; i < pages; i += 256) lk[i] = ordered(sc[i]);
  }
  barrier(CLK_LOCAL_MEM_FENCE);
#define KEY(i) (inLocal ? lk[i] : ordered(sc[i]))
  uint prefix = 0;
  for (int b = 31; b >= 0; b--) {
    uint cand = prefix | (1u << b);
    uint mine = 0;
    for (int i = lid; i < pages; i += 256) mine += KEY(i) >= cand;
    // A tree sum: 256 work-items contending for one local atomic serialise.
    cnt[lid] = mine;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int o = 128; o > 0; o >>= 1) {
      if (lid < o) cnt[lid] += cnt[lid + o];
      barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (cnt[0] >= (uint) k) prefix = cand;
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (lid == 0) {
    above = 0;
    equal = 0;
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  __global int* out = map + (size_t) h * capPages;
  for (int i = lid; i < pages; i += 256) {
    if (KEY(i) > prefix) out[atomic_inc(&above)] = i;
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  uint base = above;
  for (int i = lid; i < pages; i += 256) {
    if (KEY(i) == prefix) {
      uint slot = base + atomic_inc(&equal);
      if (slot < (uint) k) out[slot] = i;
    }
  }
#undef KEY
}
