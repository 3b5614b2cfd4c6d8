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
// the split's max m, sum l and unnormalised output go to part[h][splitBase + split][g][D+2] of
// nsplitAll splits (DeviceSkvqCache puts another kernel's splits beside these).
// VW (4 or 8) is how many halves a work-item reads at once: vloada_half (not vload_half) promises
// the compiler the vector's alignment, so the loads are 8- or 16-byte transactions, not 2-byte ones.
#ifndef VW
#define VW 4
#endif
#ifndef KUNROLL
#define KUNROLL 4 // channel quads of the key pass unrolled (8 measured the same, 32 much slower)
#endif
#ifndef VUNROLL
#define VUNROLL 8 // value loads in flight per work-item: the value pass is latency-bound otherwise
#endif
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define floatV CAT(float, VW)
#define intV CAT(int, VW)
#define vloada_halfV CAT(vloada_half, VW)
#define vstoreV CAT(vstore, VW)
// Local floats for the scores, and later for the value streams' partial outputs.
#ifndef SLEN
#define SLEN (G * CHUNK)
#endif

inline float hmaxV(floatV v) {
#if VW == 8
  float4 t = fmax(v.lo, v.hi);
#else
  float4 t = v;
#endif
  return fmax(fmax(t.s0, t.s1), fmax(t.s2, t.s3));
}

// A chunk's scores s[g*CHUNK + i] (i < len; -inf where hidden) become exp(s - m) in place, where m[g]
// is the chunk's max over the work-group (each work-item brings its own max in mx); sum[g] is the sum of
// the exponentials. Every work-item leaves with the same m and sum. Shared by the f16 and SKVQ kernels.
inline void chunk_softmax(__local float* s, __local float* red, const float* mx, int len, int lid, float* m,
                          float* sum) {
#pragma unroll
  for (int g = 0; g < G; g++) red[g * WG + lid] = mx[g];
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int o = WG / 2; o > 0; o >>= 1) {
    if (lid < o) {
#pragma unroll
      for (int g = 0; g < G; g++) red[g * WG + lid] = fmax(red[g * WG + lid], red[g * WG + lid + o]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
#pragma unroll
  for (int g = 0; g < G; g++) m[g] = red[g * WG];
  barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
  for (int g = 0; g < G; g++) sum[g] = 0.0f;
  for (int i = lid; i < len; i += WG) {
#pragma unroll
    for (int g = 0; g < G; g++) {
      float sv = s[g * CHUNK + i];
      float p = sv == -INFINITY ? 0.0f : exp(sv - m[g]);
      s[g * CHUNK + i] = p;
      sum[g] += p;
    }
  }
#pragma unroll
  for (int g = 0; g < G; g++) red[g * WG + lid] = sum[g];
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int o = WG / 2; o > 0; o >>= 1) {
    if (lid < o) {
#pragma unroll
      for (int g = 0; g < G; g++) red[g * WG + lid] += red[g * WG + lid + o];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
#pragma unroll
  for (int g = 0; g < G; g++) sum[g] = red[g * WG];
}

// A split's result into part (its G rows of D + 2 floats): each channel summed over the value streams'
// partial outputs in s[(stream * G + g) * D + c], then the chunk's max m and sum. Shared by the f16 and
// SKVQ kernels.
inline void write_split(__global float* out, __local const float* s, int streams, const float* m,
                        const float* sum, int lid) {
  for (int x = lid; x < G * D; x += WG) {
    int g = x / D, c = x % D;
    float acc = 0.0f;
    for (int st = 0; st < streams; st++) acc += s[(st * G + g) * D + c];
    out[g * (D + 2) + c] = acc;
  }
  if (lid == 0) {
#pragma unroll
    for (int g = 0; g < G; g++) {
      out[g * (D + 2) + D] = m[g];
      out[g * (D + 2) + D + 1] = sum[g];
    }
  }
}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void decode_partial(__global const half* kv, __global const int* pos, int n, int capPages,
                    __global const float* q, float scale, int qpos, int chunk,
                    __global const int* pageMap, int mapStride, int nSlots, __global float* part,
                    int splitBase, int nsplitAll) {
  __local float qs[G * D];
  __local float s[SLEN];
  __local float red[G * WG];
  const int lid = get_local_id(0);
  const int split = get_group_id(0);
  const int h = get_group_id(1);
  for (int i = lid; i < G * D; i += WG) qs[i] = q[h * G * D + i] * scale;
  barrier(CLK_LOCAL_MEM_FENCE);

  const int start = split * chunk;
  const int len = min(chunk, n - start);
  // Scores: a work-item takes VW neighbouring tokens of a page (start and chunk are multiples of VW,
  // so they share a page) and reads VW halves per channel.
  float mx[G];
#pragma unroll
  for (int g = 0; g < G; g++) mx[g] = -INFINITY;
  for (int i = lid * VW; i < len; i += WG * VW) {
    int tok = start + i;
    int page = PAGE_OF(h, tok >> 4);
    int j = tok & 15;
    __global const half* kp = kv + ((size_t) h * capPages + page) * PAGE_HALVES + j;
    floatV acc[G];
#pragma unroll
    for (int g = 0; g < G; g++) acc[g] = (floatV) (0.0f);
#pragma unroll KUNROLL
    for (int c = 0; c < D; c += 4) {
      floatV k0 = vloada_halfV(0, kp + c * PT);
      floatV k1 = vloada_halfV(0, kp + (c + 1) * PT);
      floatV k2 = vloada_halfV(0, kp + (c + 2) * PT);
      floatV k3 = vloada_halfV(0, kp + (c + 3) * PT);
#pragma unroll
      for (int g = 0; g < G; g++) {
        float4 qq = vload4(0, qs + g * D + c);
        acc[g] = mad((floatV) (qq.s0), k0, mad((floatV) (qq.s1), k1, mad((floatV) (qq.s2), k2,
                 mad((floatV) (qq.s3), k3, acc[g]))));
      }
    }
    int slot = page * PT + j;
    // Slots past the chunk, past the written slots (a sparse map may name the last, partly filled
    // page) or after the query are not visible; select() never lets their garbage through.
#define HIDE(e) (i + (e) < len && slot + (e) < nSlots && pos[slot + (e)] <= qpos ? 0 : -1)
#if VW == 8
    intV hidden = (int8) (HIDE(0), HIDE(1), HIDE(2), HIDE(3), HIDE(4), HIDE(5), HIDE(6), HIDE(7));
#else
    intV hidden = (int4) (HIDE(0), HIDE(1), HIDE(2), HIDE(3));
#endif
#undef HIDE
#pragma unroll
    for (int g = 0; g < G; g++) {
      floatV v = select(acc[g], (floatV) (-INFINITY), hidden);
      vstoreV(v, 0, s + g * CHUNK + i);
      mx[g] = fmax(mx[g], hmaxV(v));
    }
  }
  float m[G], sum[G];
  chunk_softmax(s, red, mx, len, lid, m, sum);

  // Values: D/VW work-items per token, each VW channels (a warp reads whole 256-byte rows at D = 128);
  // the work-group runs WG/(D/VW) token streams, merged through local memory after.
  const int TPT = D / VW;
  const int STREAMS = WG / TPT;
  const int stream = lid / TPT;
  const int cb = (lid % TPT) * VW;
  floatV o[G];
#pragma unroll
  for (int g = 0; g < G; g++) o[g] = (floatV) (0.0f);
#pragma unroll VUNROLL
  for (int i = stream; i < len; i += STREAMS) {
    int tok = start + i;
    int page = PAGE_OF(h, tok >> 4);
#ifdef SPARSE
    // A map may name the last, partly filled page: never-written slots may hold NaN bits. Dense
    // chunks hold written slots only, and their loads stay unconditional so they can all be in flight.
    if (page * PT + (tok & 15) >= nSlots) continue;
#endif
    floatV v = vloada_halfV(0, kv + ((size_t) h * capPages + page) * PAGE_HALVES + D * PT + (tok & 15) * D + cb);
#pragma unroll
    for (int g = 0; g < G; g++) o[g] = mad((floatV) (s[g * CHUNK + i]), v, o[g]);
  }
  barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
  for (int g = 0; g < G; g++) vstoreV(o[g], 0, s + (stream * G + g) * D + cb);
  barrier(CLK_LOCAL_MEM_FENCE);
  write_split(part + ((size_t) h * nsplitAll + splitBase + split) * G * (D + 2), s, STREAMS, m, sum, lid);
}

// Flash-decoding, pass 2: work-group = (query head, block of RCH channels), RWG work-items, RSUB =
// RWG / RCH of them per channel; merges the splits. The max, the splits' weights exp(m - M) and the sum
// L are computed by the whole work-group, a block of RWG splits at a time through local memory (every
// channel block of a head recomputes them: nsplit floats, against its RCH * nsplit), and each channel's
// sum is shared by RSUB work-items, so that no work-item walks many splits in series: the pass is
// latency-bound (50 us for 260 splits on an H100 when one work-item per channel walked them all, 12 us
// with one work-group of 4 work-items per channel per head).
#ifndef RWG
#define RWG 512
#endif
#define RCH 16
#define RSUB (RWG / RCH)
__kernel __attribute__((reqd_work_group_size(RWG, 1, 1)))
void decode_reduce(__global const float* part, int nsplit, __global float* out) {
  __local float wl[RWG];
  __local float red[RWG];
  const int hq = get_group_id(0);
  const int lid = get_local_id(0);
  const int c = get_group_id(1) * RCH + lid % RCH, r = lid / RCH;
  const int h = hq / G, g = hq % G;
  __global const float* base = part + ((size_t) h * nsplit * G + g) * (D + 2);
  const size_t stride = (size_t) G * (D + 2); // from one split to the next
  float M = -INFINITY;
  for (int sp = lid; sp < nsplit; sp += RWG) M = fmax(M, base[sp * stride + D]);
  red[lid] = M;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int o = RWG / 2; o > 0; o >>= 1) {
    if (lid < o) red[lid] = fmax(red[lid], red[lid + o]);
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  M = red[0];
  barrier(CLK_LOCAL_MEM_FENCE);
  float L = 0.0f, o = 0.0f;
  if (M != -INFINITY) {
    for (int b0 = 0; b0 < nsplit; b0 += RWG) {
      const int nb = min(RWG, nsplit - b0);
      if (lid < nb) {
        __global const float* ps = base + (b0 + lid) * stride;
        float w = exp(ps[D] - M); // a split that saw nothing has m = -inf: weight 0
        wl[lid] = w;
        L = mad(w, ps[D + 1], L);
      }
      barrier(CLK_LOCAL_MEM_FENCE);
      if (c < D) {
#pragma unroll 8
        for (int k = r; k < nb; k += RSUB) o = mad(wl[k], base[(b0 + k) * stride + c], o);
      }
      barrier(CLK_LOCAL_MEM_FENCE);
    }
  }
  red[lid] = L;
  wl[lid] = o;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int k = RWG / 2; k > 0; k >>= 1) {
    if (lid < k) red[lid] += red[lid + k];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (r == 0 && c < D) {
    L = red[0];
    float sum = 0.0f;
    for (int k = 0; k < RSUB; k++) sum += wl[k * RCH + lid];
    out[hq * D + c] = L > 0.0f ? sum / L : 0.0f;
  }
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
      vstore4(vloada_half4(0, src + i), 0, Ks + i);
      // Slots past n were never written: their bits may be NaN, and 0 * NaN would poison the row.
      float4 v = p * PT + i / D < n ? vloada_half4(0, src + D * PT + i) : (float4) (0.0f);
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


#ifdef MMA
// ---- Causal prefill on tensor cores with binary16 operands, f32 accumulation ----
//
// mma.sync.m16n8k16 (f16 x f16 -> f32). Keys and values are binary16 already. Each f32 query row is
// scaled by a power of two that puts its largest element just under 2^14, then split into a binary16
// head and a binary16 remainder; the probabilities are computed as 2^12 * p (the factor cancels in
// the final division) and split the same way. Both parts are multiplied, so every product carries 22
// significant bits of the f32 operand, and the products themselves are exact in the f32 accumulator:
// f32-level accuracy at twice the tensor rate of tf32, with fragments that need no conversion (a tf32
// m16n8k8 version of this kernel measured 43.1 TFLOP/s at 16K tokens on an H100 against this one's 45.8).
//
// Work-group: 4 warps, 16 query rows each (64 rows of one query head), queries held in registers;
// two pages (32 keys) at a time in local memory, keys key-major and values channel-major, so every B
// fragment is one 32-bit local load. The score accumulators' layout is the A layout of the PV product.
#define MBQ 64
#define KT 32                 // keys per tile: two pages
#define KW (D / 2 + 4)        // words per staged key (pairs of channels), padded against bank conflicts
#define VWS (KT / 2 + 4)      // words per staged value channel (pairs of keys)

// Two f32 values as one f16x2 word, round to nearest: lo in the low half.
inline uint pack_f16x2(float lo, float hi) {
  uint r;
  __asm__("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// The two halves of an f16x2 word as f32.
inline float2 unpack_f16x2(uint w) {
  float2 r;
  __asm__("{ .reg .f16 l, h; mov.b32 {l, h}, %2; cvt.f32.f16 %0, l; cvt.f32.f16 %1, h; }"
          : "=f"(r.x), "=f"(r.y) : "r"(w));
  return r;
}

// Head and remainder of two f32 values as f16x2 words.
inline void split_f16x2(float a, float b, uint* hi, uint* lo) {
  uint h = pack_f16x2(a, b);
  float2 hf = unpack_f16x2(h);
  *hi = h;
  *lo = pack_f16x2(a - hf.x, b - hf.y);
}

inline float shfl_xor_f(float x, int m) {
  float r;
  __asm__ __volatile__("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(r) : "f"(x), "r"(m));
  return r;
}

inline int shfl_xor_i(int x, int m) {
  int r;
  __asm__ __volatile__("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=r"(r) : "r"(x), "r"(m));
  return r;
}

// c[0..3] += A(a[0..3]) * B(b0, b1), one warp-wide m16n8k16 f16 product with f32 accumulation.
#define MMA_F16(c, a, b0, b1)                                                                      \
  __asm__("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, " \
          "{%8, %9}, {%0, %1, %2, %3};"                                                            \
          : "+f"((c)[0]), "+f"((c)[1]), "+f"((c)[2]), "+f"((c)[3])                                 \
          : "r"((a)[0]), "r"((a)[1]), "r"((a)[2]), "r"((a)[3]), "r"(b0), "r"(b1))

__kernel __attribute__((reqd_work_group_size(128, 1, 1)))
void prefill_mma(__global const ushort* kv, __global const int* pos, int n, int capPages,
                   __global const float* q, __global const int* qpos, int tokens, float scale,
                   __global float* out) {
  __local uint Kw[KT * KW];
  __local uint Vw[D * VWS];
  __local int kpos[KT];
  __local int rowpos[MBQ];
  __local int tileRange[2];
  const int lid = get_local_id(0);
  const int warp = lid >> 5, lane = lid & 31;
  const int gq = lane >> 2, tq = lane & 3;
  const int hq = get_group_id(0);
  // Heads vary fastest and the latest (heaviest) query blocks come first.
  const int t0 = (get_num_groups(1) - 1 - get_group_id(1)) * MBQ;
  const int h = hq / G;
  const int HQ = KVH * G;
  if (lid < MBQ) rowpos[lid] = t0 + lid < tokens ? qpos[t0 + lid] : INT_MIN;
  barrier(CLK_LOCAL_MEM_FENCE);
  int maxPos = INT_MIN, warpMax = INT_MIN, warpMin = INT_MAX;
  for (int r = 0; r < MBQ; r++) maxPos = max(maxPos, rowpos[r]);
  for (int r = 0; r < 16; r++) {
    warpMax = max(warpMax, rowpos[warp * 16 + r]);
    warpMin = min(warpMin, rowpos[warp * 16 + r]);
  }
  const int r0 = warp * 16 + gq; // this lane's rows: r0 and r0 + 8
  const int rp0 = rowpos[r0], rp1 = rowpos[r0 + 8];

  // Queries straight into A fragments: (r0 | r0+8) x (16ks + 2tq + {0,1} | +8).
  const float qs = scale * M_LOG2E_F;
  float2 qv[D / 16][4];
  float amax0 = 0.0f, amax1 = 0.0f;
  const int ta = t0 + r0, tb = ta + 8;
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++) {
    int c = 16 * ks + 2 * tq;
    qv[ks][0] = ta < tokens ? vload2(0, q + ((size_t) ta * HQ + hq) * D + c) * qs : (float2) (0.0f);
    qv[ks][1] = tb < tokens ? vload2(0, q + ((size_t) tb * HQ + hq) * D + c) * qs : (float2) (0.0f);
    qv[ks][2] = ta < tokens ? vload2(0, q + ((size_t) ta * HQ + hq) * D + c + 8) * qs : (float2) (0.0f);
    qv[ks][3] = tb < tokens ? vload2(0, q + ((size_t) tb * HQ + hq) * D + c + 8) * qs : (float2) (0.0f);
    amax0 = fmax(amax0, fmax(fmax(fabs(qv[ks][0].x), fabs(qv[ks][0].y)), fmax(fabs(qv[ks][2].x), fabs(qv[ks][2].y))));
    amax1 = fmax(amax1, fmax(fmax(fabs(qv[ks][1].x), fabs(qv[ks][1].y)), fmax(fabs(qv[ks][3].x), fabs(qv[ks][3].y))));
  }
  amax0 = fmax(amax0, shfl_xor_f(amax0, 1));
  amax0 = fmax(amax0, shfl_xor_f(amax0, 2));
  amax1 = fmax(amax1, shfl_xor_f(amax1, 1));
  amax1 = fmax(amax1, shfl_xor_f(amax1, 2));
  // Row scale 2^e with the row's largest |q| in [2^13, 2^14): binary16 holds it and the remainder
  // stays out of the subnormals. rs undoes it on the scores.
  int e0, e1;
  frexp(amax0, &e0);
  frexp(amax1, &e1);
  e0 = amax0 > 0.0f ? min(14 - e0, 100) : 0;
  e1 = amax1 > 0.0f ? min(14 - e1, 100) : 0;
  const float up0 = ldexp(1.0f, e0), up1 = ldexp(1.0f, e1);
  const float rs0 = ldexp(1.0f, -e0), rs1 = ldexp(1.0f, -e1);
  uint qh[D / 16][4], ql[D / 16][4];
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++) {
    split_f16x2(qv[ks][0].x * up0, qv[ks][0].y * up0, &qh[ks][0], &ql[ks][0]);
    split_f16x2(qv[ks][1].x * up1, qv[ks][1].y * up1, &qh[ks][1], &ql[ks][1]);
    split_f16x2(qv[ks][2].x * up0, qv[ks][2].y * up0, &qh[ks][2], &ql[ks][2]);
    split_f16x2(qv[ks][3].x * up1, qv[ks][3].y * up1, &qh[ks][3], &ql[ks][3]);
  }

  float o[D / 8][4];
#pragma unroll
  for (int nt = 0; nt < D / 8; nt++) {
    o[nt][0] = 0.0f;
    o[nt][1] = 0.0f;
    o[nt][2] = 0.0f;
    o[nt][3] = 0.0f;
  }
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  const int tiles = (n + KT - 1) / KT;
  for (int tile = 0; tile < tiles; tile++) {
    const int s0 = tile * KT;
    if (warp == 0) {
      int kp = s0 + lane < n ? pos[s0 + lane] : INT_MAX;
      kpos[lane] = kp;
      int lo = kp, hi = kp;
      for (int m = 1; m < 32; m <<= 1) {
        lo = min(lo, shfl_xor_i(lo, m));
        hi = max(hi, shfl_xor_i(hi, m));
      }
      if (lane == 0) {
        tileRange[0] = lo;
        tileRange[1] = hi;
      }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const int tmin = tileRange[0], tmax = tileRange[1];
    if (tmin > maxPos) { // wholly in every row's future (or empty): uniform across the group
      barrier(CLK_LOCAL_MEM_FENCE);
      continue;
    }
    // Keys k[c*16 + j] of the two pages -> Kw[key][channel pair]; values v[j*D + c] -> Vw[c][key pair].
    // Never-written slots become zeros: their bits may be NaN, and 0 * NaN would poison a row.
    __global const ushort* src = kv + ((size_t) h * capPages + 2 * tile) * PAGE_HALVES;
    // 16-byte loads (eight halves of one row) re-paired into 32-bit words with shifts and masks.
    for (int i = lid; i < (KT / 8) * (D / 2); i += 128) {
      int cp = i % (D / 2), kg = i / (D / 2), pg = kg >> 1, j0 = (kg & 1) * 8;
      __global const ushort* ps = src + pg * PAGE_HALVES + j0;
      // The tile's second page may lie past the buffer (an odd page capacity): never read a page
      // that holds no written slot.
      bool any = s0 + pg * 16 < n;
      uint4 a = any ? *(__global const uint4*) (ps + (2 * cp) * PT) : (uint4) (0u);
      uint4 b = any ? *(__global const uint4*) (ps + (2 * cp + 1) * PT) : (uint4) (0u);
      uint w[8] = {(a.x & 0xffffu) | (b.x << 16), (a.x >> 16) | (b.x & 0xffff0000u),
                   (a.y & 0xffffu) | (b.y << 16), (a.y >> 16) | (b.y & 0xffff0000u),
                   (a.z & 0xffffu) | (b.z << 16), (a.z >> 16) | (b.z & 0xffff0000u),
                   (a.w & 0xffffu) | (b.w << 16), (a.w >> 16) | (b.w & 0xffff0000u)};
      int key0 = pg * 16 + j0;
#pragma unroll
      for (int e = 0; e < 8; e++) Kw[(key0 + e) * KW + cp] = s0 + key0 + e < n ? w[e] : 0u;
    }
    for (int i = lid; i < (KT / 2) * (D / 8); i += 128) {
      int jp = i % (KT / 2), c0 = (i / (KT / 2)) * 8, key = 2 * jp, pg = key >> 4, j = key & 15;
      __global const ushort* ps = src + pg * PAGE_HALVES + D * PT + j * D + c0;
      uint4 a = s0 + key < n ? *(__global const uint4*) ps : (uint4) (0u);
      uint4 b = s0 + key + 1 < n ? *(__global const uint4*) (ps + D) : (uint4) (0u);
      Vw[(c0 + 0) * VWS + jp] = (a.x & 0xffffu) | (b.x << 16);
      Vw[(c0 + 1) * VWS + jp] = (a.x >> 16) | (b.x & 0xffff0000u);
      Vw[(c0 + 2) * VWS + jp] = (a.y & 0xffffu) | (b.y << 16);
      Vw[(c0 + 3) * VWS + jp] = (a.y >> 16) | (b.y & 0xffff0000u);
      Vw[(c0 + 4) * VWS + jp] = (a.z & 0xffffu) | (b.z << 16);
      Vw[(c0 + 5) * VWS + jp] = (a.z >> 16) | (b.z & 0xffff0000u);
      Vw[(c0 + 6) * VWS + jp] = (a.w & 0xffffu) | (b.w << 16);
      Vw[(c0 + 7) * VWS + jp] = (a.w >> 16) | (b.w & 0xffff0000u);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (tmin <= warpMax) { // uniform across the warp, as mma.sync and shfl.sync require
      float sc[KT / 8][4];
#pragma unroll
      for (int nt = 0; nt < KT / 8; nt++) {
        sc[nt][0] = 0.0f;
        sc[nt][1] = 0.0f;
        sc[nt][2] = 0.0f;
        sc[nt][3] = 0.0f;
      }
#pragma unroll
      for (int ks = 0; ks < D / 16; ks++) {
#pragma unroll
        for (int nt = 0; nt < KT / 8; nt++) {
          uint b0 = Kw[(nt * 8 + gq) * KW + 8 * ks + tq];
          uint b1 = Kw[(nt * 8 + gq) * KW + 8 * ks + 4 + tq];
          MMA_F16(sc[nt], ql[ks], b0, b1);
          MMA_F16(sc[nt], qh[ks], b0, b1);
        }
      }
      // sc[nt][e]: row r0, key nt*8 + 2tq + e; sc[nt][2 + e]: row r0 + 8. Scores are still scaled by
      // the rows' 2^e; the mask is needed only where some key of the tile is after some row of the warp.
      if (tmax > warpMin) {
#pragma unroll
        for (int nt = 0; nt < KT / 8; nt++) {
          int2 kp = vload2(0, kpos + nt * 8 + 2 * tq);
          sc[nt][0] = kp.x <= rp0 ? sc[nt][0] : -INFINITY;
          sc[nt][1] = kp.y <= rp0 ? sc[nt][1] : -INFINITY;
          sc[nt][2] = kp.x <= rp1 ? sc[nt][2] : -INFINITY;
          sc[nt][3] = kp.y <= rp1 ? sc[nt][3] : -INFINITY;
        }
      }
      float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < KT / 8; nt++) {
        mx0 = fmax(mx0, fmax(sc[nt][0], sc[nt][1]));
        mx1 = fmax(mx1, fmax(sc[nt][2], sc[nt][3]));
      }
      mx0 = fmax(mx0, shfl_xor_f(mx0, 1));
      mx0 = fmax(mx0, shfl_xor_f(mx0, 2));
      mx1 = fmax(mx1, shfl_xor_f(mx1, 1));
      mx1 = fmax(mx1, shfl_xor_f(mx1, 2));
      float mn0 = fmax(m0, mx0 * rs0), mn1 = fmax(m1, mx1 * rs1);
      // A row that has seen no visible key keeps m = -inf; subtract 0 then, never -inf - -inf.
      float sf0 = mn0 == -INFINITY ? 0.0f : mn0, sf1 = mn1 == -INFINITY ? 0.0f : mn1;
      float a0 = native_exp2(m0 - sf0), a1 = native_exp2(m1 - sf1);
      m0 = mn0;
      m1 = mn1;
      // Probabilities times 2^12: exp2(s * rs - (m - 12)). ex2.approx: 2^-22 relative error.
      const float b0 = sf0 - 12.0f, b1 = sf1 - 12.0f;
      float ls0 = 0.0f, ls1 = 0.0f;
#pragma unroll
      for (int nt = 0; nt < KT / 8; nt++) {
        sc[nt][0] = native_exp2(mad(sc[nt][0], rs0, -b0));
        sc[nt][1] = native_exp2(mad(sc[nt][1], rs0, -b0));
        sc[nt][2] = native_exp2(mad(sc[nt][2], rs1, -b1));
        sc[nt][3] = native_exp2(mad(sc[nt][3], rs1, -b1));
        ls0 += sc[nt][0] + sc[nt][1];
        ls1 += sc[nt][2] + sc[nt][3];
      }
      l0 = mad(l0, a0, ls0);
      l1 = mad(l1, a1, ls1);
      if (a0 != 1.0f || a1 != 1.0f) { // once the running max settles, most tiles skip this
#pragma unroll
        for (int nt = 0; nt < D / 8; nt++) {
          o[nt][0] *= a0;
          o[nt][1] *= a0;
          o[nt][2] *= a1;
          o[nt][3] *= a1;
        }
      }
#pragma unroll
      for (int ks = 0; ks < KT / 16; ks++) {
        uint ph[4], pl[4];
        split_f16x2(sc[2 * ks][0], sc[2 * ks][1], &ph[0], &pl[0]);
        split_f16x2(sc[2 * ks][2], sc[2 * ks][3], &ph[1], &pl[1]);
        split_f16x2(sc[2 * ks + 1][0], sc[2 * ks + 1][1], &ph[2], &pl[2]);
        split_f16x2(sc[2 * ks + 1][2], sc[2 * ks + 1][3], &ph[3], &pl[3]);
#pragma unroll
        for (int nt = 0; nt < D / 8; nt++) {
          uint v0 = Vw[(nt * 8 + gq) * VWS + 8 * ks + tq];
          uint v1 = Vw[(nt * 8 + gq) * VWS + 8 * ks + 4 + tq];
          MMA_F16(o[nt], pl, v0, v1);
          MMA_F16(o[nt], ph, v0, v1);
        }
      }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  l0 += shfl_xor_f(l0, 1);
  l0 += shfl_xor_f(l0, 2);
  l1 += shfl_xor_f(l1, 1);
  l1 += shfl_xor_f(l1, 2);
  const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
  for (int nt = 0; nt < D / 8; nt++) {
    if (ta < tokens) vstore2((float2) (o[nt][0], o[nt][1]) * inv0, 0, out + ((size_t) ta * HQ + hq) * D + nt * 8 + 2 * tq);
    if (tb < tokens) vstore2((float2) (o[nt][2], o[nt][3]) * inv1, 0, out + ((size_t) tb * HQ + hq) * D + nt * 8 + 2 * tq);
  }
}
#endif
