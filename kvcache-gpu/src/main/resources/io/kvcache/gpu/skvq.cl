// SKVQ decode over codes (DeviceSkvqCache), built after attention.cl with its defines and these:
//   KGRP, NKG   key group size and key groups per head     VGRP, NVG   the same for values
//
// Device layout of one layer's quantized pages (16 slots per page; each page contiguous per KV head,
// so the host uploads a run of pages with one write per array). Codes are 2-bit fields of 32-bit words;
// the ternary value codes (0..2) take 2 bits here too. Field i of a word (i < 16) sits at bit
//   FIELD(i) = 16 * (i & 1) + 8 * (i >> 3) + 2 * ((i & 7) >> 1),
// the order in which a tensor-core fragment wants pairs: lane t of a quad reads fields 2t, 2t+1 with
// one mask at bit 2t, and fields 2t+8, 2t+9 at bit 2t+8.
//   kq[((h*capPages + page)*16 + j)*(D/16) + s]  token j, key channels 16s..16s+15 (permuted order)
//   vq[(h*capPages + page)*D + (c % 8)*(D/8) + c/8]  value channel c (permuted order), tokens 0..15
//   ksc, kzr[((h*capPages + page)*NKG + g)*16 + j]   key scale and zero point (binary16)
//   vsc, vzr[((h*capPages + page)*NVG + g)*16 + j]   value scale and zero point (binary16)
//   qmask[h*capPages + page]                  which slots of the page are quantized (bit j)
// Queries arrive in permuted key order; outputs leave in permuted value order (the host un-permutes).

// Small integers to float without the conversion unit (a quarter of the FMA rate or less on NVIDIA
// parts): OR the integer into the mantissa of 2^23 and subtract 2^23. Exact for 0 <= x < 2^23.
#define U2F(x) (as_float((uint) (x) | 0x4B000000u) - 8388608.0f)
// Bit of field i in a code word.
#define FIELD(i) (16 * ((i) & 1) + 8 * ((i) >> 3) + 2 * (((i) & 7) >> 1))

// Flash-decoding pass 1 over quantized pages [0, n/16), portable f32 arithmetic: work-group (split, h)
// takes `chunk` tokens of KV head h for its whole GQA group. Scores: a work-item takes 4 neighbouring
// tokens and all their key words; q.k = sum_g scale_g (q_g . code_g) + zero_g sum(q_g). Values: a
// work-item per channel walks the chunk's pages, one code word per page. Partial results go to
// part[h][splitBase + split][g][D+2], beside the f16 window's splits, for decode_reduce.
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void skvq_decode_partial(__global const uint* kq, __global const half* ksc, __global const half* kzr,
                         __global const uint* vq, __global const half* vsc, __global const half* vzr,
                         __global const ushort* qmask, int n, int capPages, __global const float* q,
                         float scale, int chunk, __global float* part, int splitBase, int nsplitAll) {
  __global const float* qaux = q + KVH * G * D; // the host's per-head sums and factors, after the queries
  __local float qs[D * G]; // field order: qs[(16s + FIELD(i)/2)*G + g] = q[g][16s + i]
  __local float qsum[G * NKG];
  __local float s[SLEN];
  __local float red[G * WG];
  const int lid = get_local_id(0);
  const int split = get_group_id(0);
  const int h = get_group_id(1);
  for (int i = lid; i < G * D; i += WG) {
    int g = i / D, c = i % D;
    qs[((c & ~15) + FIELD(c & 15) / 2) * G + g] = q[h * G * D + i] * scale;
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int x = lid; x < G * NKG; x += WG) qsum[x] = qaux[h * G * NKG + x];
  barrier(CLK_LOCAL_MEM_FENCE);

  const int start = split * chunk;
  const int len = min(chunk, n - start);
  float mx[G];
#pragma unroll
  for (int g = 0; g < G; g++) mx[g] = -INFINITY;
  for (int i = lid * 4; i < len; i += WG * 4) {
    const int tok = start + i;
    const int j = tok & 15;
    const size_t pg = (size_t) h * capPages + (tok >> 4);
    __global const uint* kp = kq + (pg * 16 + j) * (D / 16);
    float4 acc[G];
#pragma unroll
    for (int g = 0; g < G; g++) acc[g] = (float4) (0.0f);
    for (int kg = 0; kg < NKG; kg++) {
      float4 dot[G];
#pragma unroll
      for (int g = 0; g < G; g++) dot[g] = (float4) (0.0f);
      for (int st = kg * KGRP / 16; st < min(D, (kg + 1) * KGRP) / 16; st++) {
        uint4 w = (uint4) (kp[st], kp[D / 16 + st], kp[2 * (D / 16) + st], kp[3 * (D / 16) + st]);
#pragma unroll
        for (int k = 0; k < 16; k++) {
          uint4 f = (w >> (uint4) (2 * k)) & (uint4) (3u);
          float4 code = (float4) (U2F(f.s0), U2F(f.s1), U2F(f.s2), U2F(f.s3));
#pragma unroll
          for (int g = 0; g < G; g++) dot[g] = mad((float4) (qs[(16 * st + k) * G + g]), code, dot[g]);
        }
      }
      __global const half* sp = ksc + (pg * NKG + kg) * 16 + j;
      __global const half* zp = kzr + (pg * NKG + kg) * 16 + j;
      float4 sc = (float4) (vload_half(0, sp), vload_half(1, sp), vload_half(2, sp), vload_half(3, sp));
      float4 zr = (float4) (vload_half(0, zp), vload_half(1, zp), vload_half(2, zp), vload_half(3, zp));
#pragma unroll
      for (int g = 0; g < G; g++) acc[g] = mad(sc, dot[g], mad(zr, (float4) (qsum[g * NKG + kg]), acc[g]));
    }
    const int m = qmask[pg] >> j;
    int4 hidden = (int4) ((i + 0 < len && (m & 1)) ? 0 : -1, (i + 1 < len && (m & 2)) ? 0 : -1,
                          (i + 2 < len && (m & 4)) ? 0 : -1, (i + 3 < len && (m & 8)) ? 0 : -1);
#pragma unroll
    for (int g = 0; g < G; g++) {
      float4 v = select(acc[g], (float4) (-INFINITY), hidden);
      vstore4(v, 0, s + g * CHUNK + i);
      mx[g] = fmax(mx[g], fmax(fmax(v.s0, v.s1), fmax(v.s2, v.s3)));
    }
  }
  float m[G], sum[G];
  chunk_softmax(s, red, mx, len, lid, m, sum);

  // Values: a work-item per channel (WG/D token streams of whole pages), merged through local memory.
  const int STREAMS = WG / D;
  const int stream = lid / D;
  const int c = lid % D;
  const int vg = c / VGRP;
  float o[G];
#pragma unroll
  for (int g = 0; g < G; g++) o[g] = 0.0f;
  for (int i0 = stream * 16; i0 < len; i0 += STREAMS * 16) { // chunks start on page boundaries
    const size_t pg = (size_t) h * capPages + ((start + i0) >> 4);
    const uint w = vq[pg * D + (c % 8) * (D / 8) + c / 8];
    __global const half* sp = vsc + (pg * NVG + vg) * 16;
    __global const half* zp = vzr + (pg * NVG + vg) * 16;
    const int lim = min(16, len - i0);
#pragma unroll 4
    for (int j = 0; j < lim; j++) {
      const float val = mad(vload_half(j, sp), U2F((w >> FIELD(j)) & 3u), vload_half(j, zp));
#pragma unroll
      for (int g = 0; g < G; g++) o[g] = mad(s[g * CHUNK + i0 + j], val, o[g]);
    }
  }
  barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
  for (int g = 0; g < G; g++) s[(stream * G + g) * D + c] = o[g];
  barrier(CLK_LOCAL_MEM_FENCE);
  write_split(part + ((size_t) h * nsplitAll + splitBase + split) * G * (D + 2), s, STREAMS, m, sum, lid);
}

#ifdef MMA
// ---- The same pass on tensor cores (NVIDIA, compute capability >= 8.0) ----
//
// Codes are small integers, exact in binary16, so they go straight into mma.sync operands: two fields
// masked into the mantissas of 1024.0 (0x6400) and 1024 subtracted, one f16x2 pair per mask. Keys are the
// A operand (16 tokens x 16 channels) against the queries as B (16 channels x 8 columns). Each query is
// split into a binary16 head and remainder as the prefill kernel does, so that the products carry
// f32-level precision, and the two parts are neighbouring columns: a tile of 8 columns holds 4 heads
// (NT tiles for G heads), one product per 16 channels for a GQA group of 4 where head and remainder in
// separate products took two (and left half the columns empty). A lane's result columns 2t, 2t+1 are
// then one head's two parts, added in f32. The key scale and zero point apply per token to the f32
// result. Values: the A operand is the codes times the token's scale (exact: codes are 0, 1 or 2),
// 16 channels x 16 tokens, against 2^12 * p as B (16 tokens x 8 columns, head and remainder side by
// side again); the zero points add sum_j p_j z_j.
//
// Work-group of 4 warps; each warp walks `ppw` pages with its own online softmax, without barriers;
// at the end the work-group merges its warps' results through local memory into one split for
// decode_reduce (a split per warp wrote and read back a quarter of the codes' bytes again at 32K tokens).
#define MMA_WARPS 4
#define STEPS (D / 16)
// Result tiles of 8 columns: 4 query heads each, every head as two columns (binary16 head, remainder).
#define NT ((G + 3) / 4)

// Two 2-bit fields (at bits 0 and 16 of x) as an exact f16x2 pair.
inline uint codes_f16x2(uint x) {
  uint r;
  __asm__("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"((x & 0x00030003u) | 0x64006400u), "r"(0x64006400u));
  return r;
}

inline uint mul_f16x2(uint a, uint b) {
  uint r;
  __asm__("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

inline void warp_sync(void) {
  __asm__ __volatile__("bar.warp.sync 0xffffffff;" ::: "memory");
}

inline int shfl_idx_i(int x, int src) {
  int r;
  __asm__ __volatile__("shfl.sync.idx.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=r"(r) : "r"(x), "r"(src));
  return r;
}

// The code pass's page pipeline: PIPE pages of a warp's run in flight as asynchronous copies into local
// memory (cp.async, compute capability 8.0+), so that a page's loads do not wait for the previous
// page's chain of products, softmax and transposition: the pass is bound by that latency, and holding
// the next page in registers instead cost the kernel more registers than it gained (168 against 124).
// PIPE 0 reads each page from global memory when its turn comes.
#ifndef PIPE
#define PIPE 3
#endif
#if PIPE == 2
#define PIPE_WAIT 1
#elif PIPE == 3
#define PIPE_WAIT 2
#elif PIPE == 4
#define PIPE_WAIT 3
#elif PIPE != 0
#error "PIPE must be 0, 2, 3 or 4"
#endif
// One page in 16-byte chunks: keys (D/4), values (D/4), key scales and zero points (2 NKG each),
// value scales and zero points (2 NVG each); the page's word offsets in that order.
#define PAGE_CHUNKS (D / 2 + 4 * (NKG + NVG))
#if PIPE > 0
#define AS __local
inline void cp_async16(__local uint4* dst, __global const uint4* src) {
  __asm__ __volatile__("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"((uint) (size_t) dst), "l"(src)
                       : "memory");
}
inline void cp_async_commit(void) {
  __asm__ __volatile__("cp.async.commit_group;" ::: "memory");
}
#define CP_ASYNC_WAIT_(n) __asm__ __volatile__("cp.async.wait_group " #n ";" ::: "memory")
#define CP_ASYNC_WAIT(n) CP_ASYNC_WAIT_(n)

inline void stage_page(__local uint4* dst, size_t pg, int lane, __global const uint* kq, __global const half* ksc,
                       __global const half* kzr, __global const uint* vq, __global const uint* vsc,
                       __global const half* vzr) {
#pragma unroll
  for (int i0 = 0; i0 < PAGE_CHUNKS; i0 += 32) {
    const int i = i0 + lane;
    if (i < PAGE_CHUNKS) {
      __global const uint4* src;
      if (i < D / 4) src = (__global const uint4*) kq + pg * (D / 4) + i;
      else if (i < D / 2) src = (__global const uint4*) vq + pg * (D / 4) + (i - D / 4);
      else if (i < D / 2 + 2 * NKG) src = (__global const uint4*) ksc + pg * 2 * NKG + (i - D / 2);
      else if (i < D / 2 + 4 * NKG) src = (__global const uint4*) kzr + pg * 2 * NKG + (i - D / 2 - 2 * NKG);
      else if (i < D / 2 + 4 * NKG + 2 * NVG) src = (__global const uint4*) vsc + pg * 2 * NVG + (i - D / 2 - 4 * NKG);
      else src = (__global const uint4*) vzr + pg * 2 * NVG + (i - D / 2 - 4 * NKG - 2 * NVG);
      cp_async16(dst + i, src);
    }
  }
}
#else
#define AS __global
#endif

// n consecutive words at p (in AS) into registers, as 16-byte loads when n is a multiple of 4.
#define LOAD_WORDS(p, w, n)                                                                         \
  do {                                                                                              \
    if ((n) % 4 == 0) {                                                                             \
      _Pragma("unroll") for (int i_ = 0; i_ < (n) / 4; i_++) {                                      \
        const uint4 x_ = ((AS const uint4*) (p))[i_];                                               \
        (w)[4 * i_] = x_.s0; (w)[4 * i_ + 1] = x_.s1; (w)[4 * i_ + 2] = x_.s2; (w)[4 * i_ + 3] = x_.s3; \
      }                                                                                             \
    } else {                                                                                        \
      _Pragma("unroll") for (int i_ = 0; i_ < (n); i_++) (w)[i_] = (p)[i_];                         \
    }                                                                                               \
  } while (0)

// One page of the binary16 window and sinks (the layout of attention.cl, keys in the stores' permuted key
// order, values in permuted value order) by one warp, in f32 arithmetic: lane = token (lanes 16-31
// take the other half of the channels), then a lane per 4 output channels. The page is a split of its
// own for decode_reduce; slots whose position is hidden (INT_MAX) or after the query weigh 0. The page
// is read from local memory, where the caller staged it with wide loads all in flight at once (read
// from global memory half by half, the 16 dependent rounds cost 13 us on an H100).
inline void ring_page(__local const half* kp, __global const int* pos, int qpos, __local const float* qsl,
                      __local float* pt, int lane, __global float* out) {
  const int j = lane & 15, hf = lane >> 4;
  float sg[G];
#pragma unroll
  for (int g = 0; g < G; g++) sg[g] = 0.0f;
#pragma unroll 8
  for (int c = hf * (D / 2); c < (hf + 1) * (D / 2); c++) {
    const float k = vload_half(c * 16 + j, kp);
#pragma unroll
    for (int g = 0; g < G; g++) sg[g] = mad(qsl[g * D + c], k, sg[g]);
  }
  const bool vis = pos[j] <= qpos;
  float mg[G], lg[G];
#pragma unroll
  for (int g = 0; g < G; g++) {
    // Every lane shuffles (shfl.sync names the whole warp); only then may lanes differ.
    const float full = sg[g] + shfl_xor_f(sg[g], 16);
    const float x = vis ? full : -INFINITY;
    float mx = x;
    mx = fmax(mx, shfl_xor_f(mx, 1));
    mx = fmax(mx, shfl_xor_f(mx, 2));
    mx = fmax(mx, shfl_xor_f(mx, 4));
    mx = fmax(mx, shfl_xor_f(mx, 8));
    const float p = vis ? exp(x - mx) : 0.0f;
    if (hf == 0) pt[g * 17 + j] = p;
    float ls = p;
    ls += shfl_xor_f(ls, 1);
    ls += shfl_xor_f(ls, 2);
    ls += shfl_xor_f(ls, 4);
    ls += shfl_xor_f(ls, 8);
    mg[g] = mx;
    lg[g] = ls;
  }
  warp_sync();
  if (4 * lane < D) {
    float4 o[G];
#pragma unroll
    for (int g = 0; g < G; g++) o[g] = (float4) (0.0f);
#pragma unroll 4
    for (int t = 0; t < 16; t++) {
      const float4 v = vload_half4(0, kp + D * 16 + t * D + 4 * lane);
#pragma unroll
      for (int g = 0; g < G; g++) o[g] = mad((float4) (pt[g * 17 + t]), v, o[g]);
    }
#pragma unroll
    for (int g = 0; g < G; g++) vstore4(o[g], 0, out + g * (D + 2) + 4 * lane);
  }
  if (lane == 0) {
#pragma unroll
    for (int g = 0; g < G; g++) {
      out[g * (D + 2) + D] = mg[g];
      out[g * (D + 2) + D + 1] = lg[g];
    }
  }
}

// The binary16 window and sinks of KV head h on tensor-core devices: the first work-groups of
// skvq_decode_mma, a warp per ring page, its split at the page's index. (Their own launch cost ~8 us of
// device time at every length on an H100; as a path of this kernel they run beside the code pass. A
// warp walking ring pages after its code pages instead raised the code pass's registers, and its time
// at 128K tokens from 80 to 120 us, in an earlier version.)
inline void ring_group(__global const half* ring, __global const int* ringPos, int ringPages, int qpos,
                       __global const float* q, float scale, __global float* part, int nsplitAll,
                       __local uint4* lmem, int r0, int h, int lid) {
  const int lane = lid & 31, warp = lid >> 5, r = r0 + warp;
  __local uint4* stage = lmem + warp * 4 * D; // a warp's page: 2 * D * 16 halves
  __local float* qsl = (__local float*) (lmem + MMA_WARPS * 4 * D);
  __local float* pt = qsl + G * D + warp * 8 * 17;
  if (r < ringPages) {
    __global const uint4* src = (__global const uint4*) (ring + ((size_t) h * ringPages + r) * 2 * D * 16);
    uint4 w[D / 8];
#pragma unroll
    for (int i = 0; i < D / 8; i++) w[i] = src[lane + 32 * i];
#pragma unroll
    for (int i = 0; i < D / 8; i++) stage[lane + 32 * i] = w[i];
  }
  for (int x = lid; x < G * D; x += 128) qsl[x] = q[h * G * D + x] * scale;
  barrier(CLK_LOCAL_MEM_FENCE);
  if (r >= ringPages) return;
  ring_page((__local const half*) stage, ringPos + r * 16, qpos, qsl, pt, lane,
            part + ((size_t) h * nsplitAll + r) * G * (D + 2));
}

// Local memory of skvq_decode_mma, one buffer for its two paths (declared apart, the driver would
// reserve both and cost occupancy), in bytes: the ring path's staged pages, scaled queries and
// transposition rows; the code path's pages in flight, warps' outputs, transposition rows, maxima and
// sums, query factors and sums.
#define PIPE_BUFS (PIPE > 0 ? PIPE : 0)
#define RING_LMEM (16 * MMA_WARPS * 4 * D + 4 * (G * D + MMA_WARPS * 8 * 17))
#define CODE_LMEM (16 * MMA_WARPS * PIPE_BUFS * PAGE_CHUNKS + 4 * (MMA_WARPS * G * D + MMA_WARPS * 8 * 17 \
                   + 2 * MMA_WARPS * 8 + G + G * NKG))
#define MMA_LMEM (RING_LMEM > CODE_LMEM ? RING_LMEM : CODE_LMEM)

__kernel __attribute__((reqd_work_group_size(128, 1, 1)))
void skvq_decode_mma(__global const uint* kq, __global const half* ksc, __global const half* kzr,
                     __global const uint* vq, __global const uint* vsc, __global const half* vzr,
                     __global const ushort* qmask, int n, int capPages, __global const float* q,
                     float scale, int ppw, int nsA, __global const half* ring,
                     __global const int* ringPos, int ringPages, int qpos, __global float* part,
                     int nsplitAll) {
  __local uint4 lmem[(MMA_LMEM + 15) / 16];
  // Work-groups [0, ringGroups) take the window, four ring pages each; the rest the codes.
  const int ringGroups = (ringPages + MMA_WARPS - 1) / MMA_WARPS;
  if ((int) get_group_id(0) < ringGroups) {
    ring_group(ring, ringPos, ringPages, qpos, q, scale, part, nsplitAll, lmem, get_group_id(0) * MMA_WARPS,
               get_group_id(1), get_local_id(0));
    return;
  }
  const int cgroup = get_group_id(0) - ringGroups;
#if PIPE > 0
  __local uint4 (*stg)[PIPE][PAGE_CHUNKS] = (__local uint4 (*)[PIPE][PAGE_CHUNKS]) lmem; // each warp's pages in flight
#endif
  __local float (*ow)[G * D] = (__local float (*)[G * D]) (lmem + MMA_WARPS * PIPE_BUFS * PAGE_CHUNKS); // the warps' outputs, rescaled to the common max
  __local float (*pt)[8 * 17] = (__local float (*)[8 * 17]) (ow + MMA_WARPS); // a warp's 2^12 p, [head][token], padded against bank conflicts
  __local float (*mw)[8] = (__local float (*)[8]) (pt + MMA_WARPS); // the warps' running max per head
  __local float (*lw)[8] = mw + MMA_WARPS;                          // and sum
  __local float* qf = (__local float*) (lw + MMA_WARPS); // per query head: the power of two that brings max |q| to [2^13, 2^14)
  __local float* qsum = qf + G;
  const int lid = get_local_id(0), lane = lid & 31, warp = lid >> 5;
  const int gq = lane >> 2, tq = lane & 3;
  const int h = get_group_id(1);
  const int split = cgroup * MMA_WARPS + warp; // a warp past nsA walks no page
  // qaux, from the host after the queries: sum(q * scale) per head and key group, then the heads' powers
  // of two.
  __global const float* qaux = q + KVH * G * D;
  if (lid < G) qf[lid] = qaux[KVH * G * NKG + h * G + lid];
  for (int x = lid; x < G * NKG; x += 128) qsum[x] = qaux[h * G * NKG + x];
  barrier(CLK_LOCAL_MEM_FENCE);

  // B fragments of the queries, tile t: (channels 16s + 2tq + {0,1} | +8) x column gq, which is head
  // 4t + gq/2, its binary16 head (gq even) or remainder (gq odd).
  uint qb[NT][STEPS][2];
#pragma unroll
  for (int t = 0; t < NT; t++) {
    const int hb = 4 * t + (gq >> 1);
    const float f = hb < G ? qf[hb] * scale : 0.0f;
#pragma unroll
    for (int st = 0; st < STEPS; st++) {
      float a0 = 0, a1 = 0, a8 = 0, a9 = 0;
      if (hb < G) {
        __global const float* qr = q + (h * G + hb) * D + 16 * st + 2 * tq;
        a0 = qr[0] * f; a1 = qr[1] * f; a8 = qr[8] * f; a9 = qr[9] * f;
      }
      uint hi0, lo0, hi1, lo1;
      split_f16x2(a0, a1, &hi0, &lo0);
      split_f16x2(a8, a9, &hi1, &lo1);
      qb[t][st][0] = (gq & 1) ? lo0 : hi0;
      qb[t][st][1] = (gq & 1) ? lo1 : hi1;
    }
  }
  // This lane's result columns in tile t are 2tq and 2tq + 1: head 4t + tq, its head and remainder parts.
  float inv[NT];
#pragma unroll
  for (int t = 0; t < NT; t++) inv[t] = 4 * t + tq < G ? 1.0f / qf[4 * t + tq] : 0.0f;

  float O[NT][STEPS][4];
  float mrun[NT], l[NT], z[NT][NVG];
#pragma unroll
  for (int t = 0; t < NT; t++) {
#pragma unroll
    for (int mt = 0; mt < STEPS; mt++) O[t][mt][0] = O[t][mt][1] = O[t][mt][2] = O[t][mt][3] = 0.0f;
    mrun[t] = -INFINITY;
    l[t] = 0.0f;
#pragma unroll
    for (int v = 0; v < NVG; v++) z[t][v] = 0.0f;
  }

  const int pages = (n + 15) >> 4;
  const int first = split * ppw, last = split < nsA ? min(pages, first + ppw) : first;
  const size_t pg0 = (size_t) h * capPages;
#if PIPE > 0
#pragma unroll
  for (int i = 0; i < PIPE - 1; i++) {
    if (first + i < last) stage_page(stg[warp][i], pg0 + first + i, lane, kq, ksc, kzr, vq, vsc, vzr);
    cp_async_commit(); // a group per page, empty past the run, so that the wait below counts pages
  }
#endif
  // The masks of 32 pages at a time, a lane per page, handed out by shuffle (one load per 32 pages
  // instead of one in each page's chain); the next 32 already loading.
  int maskCur = first + lane < last ? qmask[pg0 + first + lane] : 0;
  int maskNext = first + 32 + lane < last ? qmask[pg0 + first + 32 + lane] : 0;
  for (int page = first; page < last; page++) {
    const int i = page - first;
    const size_t pg = pg0 + page;
    if (i > 0 && (i & 31) == 0) { // uniform over the warp
      maskCur = maskNext;
      maskNext = page + 32 + lane < last ? qmask[pg + 32 + lane] : 0;
    }
    const int mask = shfl_idx_i(maskCur, i & 31);
#if PIPE > 0
    warp_sync(); // every lane is done with the buffer that the next copy overwrites
    if (page + PIPE - 1 < last) stage_page(stg[warp][(i + PIPE - 1) % PIPE], pg + PIPE - 1, lane, kq, ksc, kzr, vq, vsc, vzr);
    cp_async_commit();
    CP_ASYNC_WAIT(PIPE_WAIT); // this lane's copies of this page are done...
    warp_sync();              // ...and every lane's are visible
    __local const uint* kw = (__local const uint*) stg[warp][i % PIPE];
#else
    __global const uint* kw = kq + pg * D;
#endif
    // The page's arrays at the offsets of stage_page (contiguous per page in global memory too).
#if PIPE > 0
    AS const uint* vwp = kw + D;
    AS const half* kscp = (AS const half*) (kw + 2 * D);
    AS const half* kzrp = kscp + NKG * 16;
    AS const uint* vscp = kw + 2 * D + NKG * 16;
    AS const half* vzrp = kscp + 2 * NKG * 16 + NVG * 16;
#else
    __global const uint* vwp = vq + pg * D;
    __global const half* kscp = ksc + pg * NKG * 16;
    __global const half* kzrp = kzr + pg * NKG * 16;
    __global const uint* vscp = vsc + pg * NVG * 8;
    __global const half* vzrp = vzr + pg * NVG * 16;
#endif
    // This lane's two tokens' key words and its rows' value words, as 16-byte vectors where the layout
    // is aligned for them, all issued before any is used.
    uint k0[STEPS], k1[STEPS], vw[D / 8];
    LOAD_WORDS(kw + gq * STEPS, k0, STEPS);
    LOAD_WORDS(kw + (gq + 8) * STEPS, k1, STEPS);
    LOAD_WORDS(vwp + gq * (D / 8), vw, D / 8);
    // Scores of tokens gq (s[t][0]) and gq + 8 (s[t][1]) for head 4t + tq.
    float s[NT][2];
#pragma unroll
    for (int t = 0; t < NT; t++) s[t][0] = s[t][1] = 0.0f;
#pragma unroll
    for (int kg = 0; kg < NKG; kg++) {
      float acc[NT][4];
#pragma unroll
      for (int t = 0; t < NT; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
#pragma unroll
      for (int st = kg * KGRP / 16; st < (kg + 1) * KGRP / 16; st++) {
        uint w0 = k0[st] >> (2 * tq), w1 = k1[st] >> (2 * tq);
        uint a[4] = {codes_f16x2(w0), codes_f16x2(w1), codes_f16x2(w0 >> 8), codes_f16x2(w1 >> 8)};
#pragma unroll
        for (int t = 0; t < NT; t++) MMA_F16(acc[t], a, qb[t][st][0], qb[t][st][1]);
      }
      const float sc0 = vload_half(gq, kscp + kg * 16), sc1 = vload_half(gq + 8, kscp + kg * 16);
      const float zr0 = vload_half(gq, kzrp + kg * 16), zr1 = vload_half(gq + 8, kzrp + kg * 16);
#pragma unroll
      for (int t = 0; t < NT; t++) {
        const float qs = 4 * t + tq < G ? qsum[(4 * t + tq) * NKG + kg] : 0.0f;
        s[t][0] += sc0 * (acc[t][0] + acc[t][1]) * inv[t] + zr0 * qs;
        s[t][1] += sc1 * (acc[t][2] + acc[t][3]) * inv[t] + zr1 * qs;
      }
    }
    const bool v0 = (mask >> gq) & 1, v1 = (mask >> (gq + 8)) & 1;
    float p[NT][2];
#pragma unroll
    for (int t = 0; t < NT; t++) {
      // Online softmax per head: the page's max over its 16 tokens (8 lanes x 2 rows).
      float pm = fmax(v0 ? s[t][0] : -INFINITY, v1 ? s[t][1] : -INFINITY);
      pm = fmax(pm, shfl_xor_f(pm, 4));
      pm = fmax(pm, shfl_xor_f(pm, 8));
      pm = fmax(pm, shfl_xor_f(pm, 16));
      const float mn = fmax(mrun[t], pm);
      const float al = mn == -INFINITY ? 1.0f : exp(mrun[t] - mn);
      mrun[t] = mn;
      p[t][0] = v0 ? exp(s[t][0] - mn) : 0.0f;
      p[t][1] = v1 ? exp(s[t][1] - mn) : 0.0f;
      l[t] = l[t] * al + p[t][0] + p[t][1];
#pragma unroll
      for (int v = 0; v < NVG; v++) {
        const float zt0 = vload_half(gq, vzrp + v * 16), zt1 = vload_half(gq + 8, vzrp + v * 16);
        z[t][v] = z[t][v] * al + p[t][0] * zt0 + p[t][1] * zt1;
      }
#pragma unroll
      for (int mt = 0; mt < STEPS; mt++) {
        O[t][mt][0] *= al; O[t][mt][1] *= al; O[t][mt][2] *= al; O[t][mt][3] *= al;
      }
    }
    // 2^12 p transposed through local memory into the B layout: (tokens 2tq + {0,1} | +8) x column gq.
    warp_sync();
#pragma unroll
    for (int t = 0; t < NT; t++) {
      pt[warp][(4 * t + tq) * 17 + gq] = 4096.0f * p[t][0];
      pt[warp][(4 * t + tq) * 17 + gq + 8] = 4096.0f * p[t][1];
    }
    warp_sync();
    uint pb[NT][2];
#pragma unroll
    for (int t = 0; t < NT; t++) {
      __local const float* row = pt[warp] + (4 * t + (gq >> 1)) * 17 + 2 * tq;
      uint hi0, lo0, hi1, lo1;
      split_f16x2(row[0], row[1], &hi0, &lo0);
      split_f16x2(row[8], row[9], &hi1, &lo1);
      pb[t][0] = (gq & 1) ? lo0 : hi0;
      pb[t][1] = (gq & 1) ? lo1 : hi1;
    }
    // Values: m-tile mt is channels 16mt .. 16mt+15; this lane's rows are channels 16mt + gq (+8).
#pragma unroll
    for (int mt = 0; mt < STEPS; mt++) {
      const int vgi = 16 * mt / VGRP;
      AS const uint* sw = vscp + vgi * 8;
      const uint sl = sw[tq], sh = sw[tq + 4]; // scales of tokens 2tq, 2tq+1 and 2tq+8, 2tq+9
      const uint wa = vw[2 * mt] >> (2 * tq), wb = vw[2 * mt + 1] >> (2 * tq);
      uint a[4] = {mul_f16x2(codes_f16x2(wa), sl), mul_f16x2(codes_f16x2(wb), sl),
                   mul_f16x2(codes_f16x2(wa >> 8), sh), mul_f16x2(codes_f16x2(wb >> 8), sh)};
#pragma unroll
      for (int t = 0; t < NT; t++) MMA_F16(O[t][mt], a, pb[t][0], pb[t][1]);
    }
  }
  // The sums over the 8 lanes that share a head.
#pragma unroll
  for (int t = 0; t < NT; t++) {
    l[t] += shfl_xor_f(l[t], 4); l[t] += shfl_xor_f(l[t], 8); l[t] += shfl_xor_f(l[t], 16);
#pragma unroll
    for (int v = 0; v < NVG; v++) {
      z[t][v] += shfl_xor_f(z[t][v], 4); z[t][v] += shfl_xor_f(z[t][v], 8); z[t][v] += shfl_xor_f(z[t][v], 16);
    }
  }
  // Merge the four warps: the common max per head, each warp's output rescaled to it in local memory.
  if (gq == 0) {
#pragma unroll
    for (int t = 0; t < NT; t++) {
      mw[warp][4 * t + tq] = mrun[t];
      lw[warp][4 * t + tq] = l[t];
    }
  }
  barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
  for (int t = 0; t < NT; t++) {
    const int hd = 4 * t + tq;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < MMA_WARPS; w++) M = fmax(M, mw[w][hd]);
    // (A warp that saw nothing has max -inf and output 0: factor 0, never exp(-inf + inf).)
    const float f = (mrun[t] == -INFINITY ? 0.0f : exp(mrun[t] - M)) * (1.0f / 4096.0f);
    if (hd < G) {
#pragma unroll
      for (int mt = 0; mt < STEPS; mt++) {
        const int ch0 = 16 * mt + gq;
        const float zv = 4096.0f * z[t][16 * mt / VGRP];
        ow[warp][hd * D + ch0] = (O[t][mt][0] + O[t][mt][1] + zv) * f;
        ow[warp][hd * D + ch0 + 8] = (O[t][mt][2] + O[t][mt][3] + zv) * f;
      }
    }
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  __global float* out = part + ((size_t) h * nsplitAll + ringPages + cgroup) * G * (D + 2);
  for (int x = lid; x < G * D; x += 128) {
    float acc = 0.0f;
#pragma unroll
    for (int w = 0; w < MMA_WARPS; w++) acc += ow[w][x];
    out[(x / D) * (D + 2) + x % D] = acc;
  }
  if (lid < G) {
    float M = -INFINITY, L = 0.0f;
#pragma unroll
    for (int w = 0; w < MMA_WARPS; w++) M = fmax(M, mw[w][lid]);
#pragma unroll
    for (int w = 0; w < MMA_WARPS; w++) L += mw[w][lid] == -INFINITY ? 0.0f : exp(mw[w][lid] - M) * lw[w][lid];
    out[lid * (D + 2) + D] = M;
    out[lid * (D + 2) + D + 1] = L;
  }
}
#endif
