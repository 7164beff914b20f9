// The fp32 inner kernel of region_attention_cpu.cpp: attention of a run of query rows that share one
// region's keys and values, with online softmax over key tiles.
//
// This file is included several times by region_attention_cpu.cpp, each time inside its own namespace and
// under a different `#pragma GCC target` (plain x86-64, AVX2+FMA, AVX-512), so that one source gives one
// machine-code copy per instruction set and the best is picked at run time. Builds therefore need no
// -march flag and the binary runs on any x86-64 (and on other architectures, where only the plain copy is
// built). Hence: no include guard, no #include, and nothing here may call a non-inline function defined
// outside (it would run with the default target). The includer defines ALE_MR, rows per micro-kernel
// call (the register budget differs: 16 vector registers for AVX2, 32 for AVX-512), and ALE_VEC_BYTES, the
// vector width: 32 (8 floats, one ymm register) for AVX2/AVX-512, 16 (SSE2, NEON) for the plain copy.
// Vectors are GCC vector extensions, so the same code serves every target.

typedef float vf __attribute__((vector_size(ALE_VEC_BYTES)));
typedef int vi __attribute__((vector_size(ALE_VEC_BYTES)));
constexpr int W = ALE_VEC_BYTES / 4;  // floats per vf; kPad is a multiple of it

static inline __attribute__((always_inline)) vf load(const float* p) {
  vf v;
  __builtin_memcpy(&v, p, sizeof v);  // unaligned load: packed rows are only 4-byte aligned
  return v;
}

static inline __attribute__((always_inline)) void store(float* p, vf v) { __builtin_memcpy(p, &v, sizeof v); }

static inline __attribute__((always_inline)) vf splat(float x) { return vf{} + x; }

static inline __attribute__((always_inline)) float hmax(vf v) {
  float m = v[0];
  for (int i = 1; i < W; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

static inline __attribute__((always_inline)) float hsum(vf v) {
  float s = 0.f;
  for (int i = 0; i < W; ++i) s += v[i];
  return s;
}

// exp(x) for the softmax's x = score - row max <= 0 (Cephes' expf polynomial, ~1 ulp), and exactly 0 below
// -87.3 (so exp(-inf) = 0: masked and padding keys get zero weight). libm's expf is scalar and would cost
// more than the dot products at D = 40.
static inline __attribute__((always_inline)) vf vexp(vf x) {
  const vf lo = splat(-87.33654f);
  const vi underflow = x < lo;
  x = underflow ? lo : x;
  const vf fx = x * 1.44269504088896341f + 0.5f;
  vi n = __builtin_convertvector(fx, vi);                   // truncates towards zero ...
  n += (vi)(__builtin_convertvector(n, vf) > fx);           // ... so step down where that rounded up: floor
  const vf nf = __builtin_convertvector(n, vf);
  x = x - nf * 0.693359375f;                                // x - n ln2 in two parts, exactly
  x = x - nf * -2.12194440e-4f;
  vf y = splat(1.9875691500e-4f);
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * (x * x) + x + 1.0f;
  const vf pow2n = (vf)((n + 127) << 23);  // n in [-126, 0]: a normal float's exponent bits
  const vf r = y * pow2n;
  return underflow ? vf{} : r;
}

// p[r, j] = q[r] . kt[:, j] for MR rows and key columns j < nt (nt a multiple of W). kt is K transposed,
// (D, ldk): a column block of 2W keys is two vector loads per d, shared by the MR rows.
template <int MR>
static inline __attribute__((always_inline)) void scores_tile(const float* q, int ldq, int D, const float* kt,
                                                             int ldk, int nt, float* p, int ldp) {
  int j = 0;
  for (; j + 2 * W <= nt; j += 2 * W) {
    vf c0[MR], c1[MR];
    for (int r = 0; r < MR; ++r) c0[r] = c1[r] = vf{};
    const float* kp = kt + j;
    for (int d = 0; d < D; ++d, kp += ldk) {
      const vf k0 = load(kp), k1 = load(kp + W);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const vf a = splat(q[r * ldq + d]);
        c0[r] += a * k0;
        c1[r] += a * k1;
      }
    }
    for (int r = 0; r < MR; ++r) {
      store(p + r * ldp + j, c0[r]);
      store(p + r * ldp + j + W, c1[r]);
    }
  }
  if (j < nt) {  // one vector of keys left
    vf c0[MR];
    for (int r = 0; r < MR; ++r) c0[r] = vf{};
    const float* kp = kt + j;
    for (int d = 0; d < D; ++d, kp += ldk) {
      const vf k0 = load(kp);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) c0[r] += splat(q[r * ldq + d]) * k0;
    }
    for (int r = 0; r < MR; ++r) store(p + r * ldp + j, c0[r]);
  }
}

// out[r] += p[r, :n] @ vv[:n] for MR rows; vv is (n, Dp), out rows have stride Dp (a multiple of W).
template <int MR>
static inline __attribute__((always_inline)) void pv_tile(const float* p, int ldp, int n, const float* vv, int Dp,
                                                         float* out) {
  int c = 0;
  for (; c + 2 * W <= Dp; c += 2 * W) {
    vf a0[MR], a1[MR];
    for (int r = 0; r < MR; ++r) {
      a0[r] = load(out + r * Dp + c);
      a1[r] = load(out + r * Dp + c + W);
    }
    const float* vp = vv + c;
    for (int s = 0; s < n; ++s, vp += Dp) {
      const vf v0 = load(vp), v1 = load(vp + W);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const vf w = splat(p[r * ldp + s]);
        a0[r] += w * v0;
        a1[r] += w * v1;
      }
    }
    for (int r = 0; r < MR; ++r) {
      store(out + r * Dp + c, a0[r]);
      store(out + r * Dp + c + W, a1[r]);
    }
  }
  if (c < Dp) {
    vf a0[MR];
    for (int r = 0; r < MR; ++r) a0[r] = load(out + r * Dp + c);
    const float* vp = vv + c;
    for (int s = 0; s < n; ++s, vp += Dp) {
      const vf v0 = load(vp);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) a0[r] += splat(p[r * ldp + s]) * v0;
    }
    for (int r = 0; r < MR; ++r) store(out + r * Dp + c, a0[r]);
  }
}

// Attention of `rows` (<= kMaxRows) query rows that read the same keys and values.
//   q     (rows, Dp), already multiplied by the softmax scale, zero past D
//   bias  one (Sp,) row per query row: 0 for an allowed key, mask_value for a disallowed one, -inf for the
//         padding keys >= S. Rows are shared between pixels of equal cover (a few distinct ones in ALE).
//   kt    (Dp, Sp) keys transposed; vv (Sp, Dp) values, both zero-padded
//   p     scratch of (rows, key_tile); out (rows, Dp): softmax(q kt + bias) @ vv, zero for a row whose
//         every score is -inf (the contract's "a pixel that may see nothing gets zeros").
// Sp, Dp and key_tile are multiples of W. Keys are visited in tiles of key_tile with the online softmax
// (running max m and sum l per row; earlier tiles' sums rescaled when the max grows), so any S works with
// O(rows * key_tile) scratch; at CLIP's S = 77 one tile holds every key and the softmax is exact in one pass.
static void attend_run(const float* q, int D, int Dp, const float* const* bias, const float* kt, const float* vv, int S,
                       int Sp, int key_tile, float* p, float* out, int rows) {
  const float neg_inf = -__builtin_inff();
  float m[kMaxRows], l[kMaxRows], alpha[kMaxRows];
  for (int i = 0; i < rows; ++i) {
    m[i] = neg_inf;
    l[i] = 0.f;
    for (int c = 0; c < Dp; ++c) out[i * Dp + c] = 0.f;
  }
  const int ldp = key_tile;
  for (int t0 = 0; t0 < Sp; t0 += key_tile) {
    const int nt = Sp - t0 < key_tile ? Sp - t0 : key_tile;
    int i = 0;
    for (; i + ALE_MR <= rows; i += ALE_MR) scores_tile<ALE_MR>(q + i * Dp, Dp, D, kt + t0, Sp, nt, p + i * ldp, ldp);
    for (; i < rows; ++i) scores_tile<1>(q + i * Dp, Dp, D, kt + t0, Sp, nt, p + i * ldp, ldp);

    for (i = 0; i < rows; ++i) {
      float* pr = p + i * ldp;
      const float* br = bias[i] + t0;
      vf mx = splat(neg_inf);
      for (int j = 0; j < nt; j += W) {
        const vf s = load(pr + j) + load(br + j);
        store(pr + j, s);
        mx = s > mx ? s : mx;
      }
      const float tile_max = hmax(mx);
      const float m_new = tile_max > m[i] ? tile_max : m[i];
      if (m_new == neg_inf) {  // nothing allowed so far: no weight, nothing to rescale
        for (int j = 0; j < nt; ++j) pr[j] = 0.f;
        alpha[i] = 1.f;
        continue;
      }
      // exp(m_old - m_new): 0 on the first tile that has an allowed key (m_old = -inf, out still zero).
      alpha[i] = vexp(splat(m[i] - m_new))[0];
      vf sum = vf{};
      const vf mv = splat(m_new);
      for (int j = 0; j < nt; j += W) {
        const vf e = vexp(load(pr + j) - mv);
        store(pr + j, e);
        sum += e;
      }
      l[i] = l[i] * alpha[i] + hsum(sum);
      m[i] = m_new;
    }
    if (t0 > 0) {
      for (i = 0; i < rows; ++i) {
        if (alpha[i] != 1.f) {
          const vf a = splat(alpha[i]);
          for (int c = 0; c < Dp; c += W) store(out + i * Dp + c, load(out + i * Dp + c) * a);
        }
      }
    }
    // Padding keys (>= S) have zero weight and zero values: skip them.
    const int n = S - t0 < nt ? S - t0 : nt;
    const float* vt = vv + (long)t0 * Dp;
    for (i = 0; i + ALE_MR <= rows; i += ALE_MR) pv_tile<ALE_MR>(p + i * ldp, ldp, n, vt, Dp, out + i * Dp);
    for (; i < rows; ++i) pv_tile<1>(p + i * ldp, ldp, n, vt, Dp, out + i * Dp);
  }
  for (int i = 0; i < rows; ++i) {
    const vf inv = splat(l[i] > 0.f ? 1.f / l[i] : 0.f);
    for (int c = 0; c < Dp; c += W) store(out + i * Dp + c, load(out + i * Dp + c) * inv);
  }
}
