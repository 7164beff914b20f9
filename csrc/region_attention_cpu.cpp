// C++ CPU kernel of ale_kernels.region_attention (backend="cpp").
//
// A Python extension module with two plain functions, region_attention and simd_level: the CPU
// implementation that the backend registry's "cpp" entry runs inside the one custom op
// ale_kernels::region_attention, after the public wrapper has checked shapes, dtypes and devices and the
// routing plan has checked the routing values. The checks here are only a defensive minimum for direct calls.
//
// One fused pass. The keys and values of every (batch, region, head) are first packed once to fp32 (keys
// transposed, both zero-padded to multiples of 8): small (S = 77 tokens) and reused by every query block
// of that head, so they stay in cache. Pixels are sorted by region once per batch entry (a counting sort).
// Token masks become additive bias rows, one per distinct cover. Then OpenMP runs the (batch, head, block
// of 64 sorted pixels) tasks: gather and convert the block's queries, and for each run of rows of one
// region compute scores, softmax and P @ V in cache (region_attention_kernel.h), then write the rows to
// the (B, L, H, D) output. Nothing of size L x S ever reaches memory.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
// Only pybind11 and its at::Tensor conversions: the whole of torch/extension.h would double the compile.
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <unordered_map>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

// The kernels keep 32-byte vectors local to always-inline functions; GCC's note that passing them by
// value would change the ABI without AVX does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace ale_cpp {

constexpr int kMaxRows = 64;  // query rows per task: one task's scratch (a few tens of KB) stays in L1/L2
constexpr int kPad = 8;       // D and S are padded to whole 8-float vectors

// One machine-code copy of the kernel per instruction set (see region_attention_kernel.h).
namespace generic {
#define ALE_MR 4
#define ALE_VEC_BYTES 16  // the baseline's native width (SSE2, NEON): wider vectors would be split poorly
#include "region_attention_kernel.h"
#undef ALE_VEC_BYTES
#undef ALE_MR
}  // namespace generic

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ALE_HAVE_X86_VARIANTS 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace avx2 {
#define ALE_MR 4  // 2 * 4 accumulators + 2 loads of 16 ymm registers
#define ALE_VEC_BYTES 32
#include "region_attention_kernel.h"
#undef ALE_VEC_BYTES
#undef ALE_MR
}  // namespace avx2
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx2,fma"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx2,fma")
#endif
namespace avx512 {
#define ALE_MR 8  // 32 vector registers: twice the rows per key load
#define ALE_VEC_BYTES 32  // 8-float vectors as for AVX2: 16 would pad D = 40 to 48
#include "region_attention_kernel.h"
#undef ALE_VEC_BYTES
#undef ALE_MR
}  // namespace avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

using AttendFn = void (*)(const float*, int, int, const float* const*, const float*, const float*, int, int, int,
                          float*, float*, int);

// 0 plain, 1 AVX2+FMA, 2 AVX-512: the best this CPU runs.
int64_t best_simd_level() {
#ifdef ALE_HAVE_X86_VARIANTS
  static const int64_t level = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
      return int64_t{2};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return int64_t{1};
    return int64_t{0};
  }();
  return level;
#else
  return 0;
#endif
}

AttendFn kernel_for(int64_t level) {
#ifdef ALE_HAVE_X86_VARIANTS
  if (level >= 2) return &avx512::attend_run;
  if (level == 1) return &avx2::attend_run;
#endif
  (void)level;
  return &generic::attend_run;
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// 64-byte aligned fp32 scratch.
struct Buffer {
  float* ptr = nullptr;
  explicit Buffer(size_t n) {
    ptr = static_cast<float*>(std::aligned_alloc(64, round_up(static_cast<int64_t>(std::max<size_t>(n, 1)) * 4, 64)));
    TORCH_CHECK(ptr != nullptr, "region_attention (cpp): out of memory for ", n, " floats of scratch");
  }
  ~Buffer() { std::free(ptr); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

template <typename scalar_t>
void run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const int64_t* region,
         const int64_t* cover, const int64_t* owner, float scale, float mask_value, int key_tile, AttendFn attend,
         at::Tensor& out) {
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), D = q.size(3);
  const int64_t R = v.size(1), S = v.size(3);
  const bool k_per_region = k.dim() == 5;
  const int64_t Rk = k_per_region ? R : 1;
  const int64_t Dp = round_up(D, kPad), Sp = round_up(S, kPad);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const int threads = at::get_num_threads();

  // Pack keys (transposed, (Dp, Sp)) and values ((Sp, Dp)) to fp32, zero-padded, once per call.
  Buffer kt_buf(static_cast<size_t>(B * Rk * H * Dp * Sp)), v_buf(static_cast<size_t>(B * R * H * Sp * Dp));
  {
    const scalar_t* kp = k.data_ptr<scalar_t>();
    const scalar_t* vp = v.data_ptr<scalar_t>();
    // (b, r, h, s, d) strides; shared keys get region stride 0.
    const int64_t ks0 = k.stride(0), ks1 = k_per_region ? k.stride(1) : 0, ks2 = k.stride(k_per_region ? 2 : 1),
                  ks3 = k.stride(k_per_region ? 3 : 2), ks4 = k.stride(k_per_region ? 4 : 3);
    const int64_t vs0 = v.stride(0), vs1 = v.stride(1), vs2 = v.stride(2), vs3 = v.stride(3), vs4 = v.stride(4);
    float* ktp = kt_buf.ptr;
    float* vvp = v_buf.ptr;
#pragma omp parallel for collapse(3) schedule(static) num_threads(threads)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t r = 0; r < R; ++r) {
        for (int64_t h = 0; h < H; ++h) {
          float* vdst = vvp + ((b * R + r) * H + h) * Sp * Dp;
          std::fill(vdst, vdst + Sp * Dp, 0.f);
          for (int64_t s = 0; s < S; ++s)
            for (int64_t d = 0; d < D; ++d)
              vdst[s * Dp + d] = static_cast<float>(vp[b * vs0 + r * vs1 + h * vs2 + s * vs3 + d * vs4]);
          if (r < Rk) {
            float* kdst = ktp + ((b * Rk + r) * H + h) * Dp * Sp;
            std::fill(kdst, kdst + Dp * Sp, 0.f);
            for (int64_t s = 0; s < S; ++s)
              for (int64_t d = 0; d < D; ++d)
                kdst[d * Sp + s] = static_cast<float>(kp[b * ks0 + r * ks1 + h * ks2 + s * ks3 + d * ks4]);
          }
        }
      }
    }
  }

  // Pixels sorted by region, per batch entry (stable counting sort): a query block then holds runs of one
  // region, and each run reads one region's keys and values.
  std::vector<int64_t> order(static_cast<size_t>(B * L));
  std::vector<int64_t> sorted_region(static_cast<size_t>(B * L));
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> start(static_cast<size_t>(R + 1), 0);
    for (int64_t l = 0; l < L; ++l) {
      const int64_t r = region[b * L + l];
      TORCH_CHECK(r >= 0 && r < R, "region_attention (cpp): q_region values must lie in [0, R) = [0, ", R,
                  "), got ", r);
      ++start[r + 1];
    }
    for (int64_t r = 0; r < R; ++r) start[r + 1] += start[r];
    for (int64_t l = 0; l < L; ++l) {
      const int64_t r = region[b * L + l];
      const int64_t pos = b * L + start[r]++;
      order[pos] = l;
      sorted_region[pos] = r;
    }
  }

  // Token masks as additive bias rows: 0 allowed, mask_value disallowed, -inf for the padding keys. Pixels
  // whose covers agree on every bit some token depends on share a row; ALE has a handful per image (each
  // object, the background, the overlaps), so the table is tiny and building it costs O(L), not O(L * S).
  std::vector<int64_t> bias_index(static_cast<size_t>(B * L)), table_start(static_cast<size_t>(B));
  std::vector<float> table;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* ow = owner == nullptr ? nullptr : owner + b * S;
    int64_t relevant = 0;
    for (int64_t s = 0; ow != nullptr && s < S; ++s)
      if (ow[s] >= 0) relevant |= int64_t{1} << ow[s];
    std::unordered_map<int64_t, int64_t> ids;
    std::vector<int64_t> keys;
    for (int64_t l = 0; l < L; ++l) {
      const int64_t key = cover[b * L + l] & relevant;
      const auto found = ids.emplace(key, static_cast<int64_t>(keys.size()));
      if (found.second) keys.push_back(key);
      bias_index[b * L + l] = found.first->second;
    }
    table_start[b] = static_cast<int64_t>(table.size()) / Sp;
    for (const int64_t key : keys) {
      for (int64_t s = 0; s < S; ++s) {
        // Token s is allowed iff it is shared (owner < 0) or its owner's bit is set in the cover.
        const bool allowed = ow == nullptr || ow[s] < 0 || ((key >> ow[s]) & 1);
        table.push_back(allowed ? 0.f : mask_value);
      }
      table.insert(table.end(), Sp - S, neg_inf);  // padding keys never take weight
    }
  }

  const scalar_t* qp = q.data_ptr<scalar_t>();
  const int64_t qs0 = q.stride(0), qs1 = q.stride(1), qs2 = q.stride(2), qs3 = q.stride(3);
  scalar_t* op = out.data_ptr<scalar_t>();  // contiguous (B, L, H, D)
  const int64_t blocks = (L + kMaxRows - 1) / kMaxRows;
  const float* ktp = kt_buf.ptr;
  const float* vvp = v_buf.ptr;

#pragma omp parallel num_threads(threads)
  {
    // Per-thread scratch for one task: queries, masks, probabilities of one key tile, output rows.
    Buffer qbuf(kMaxRows * Dp), pbuf(kMaxRows * key_tile), obuf(kMaxRows * Dp);
    const float* brow[kMaxRows];
    // Tasks in (b, h, block) order, static schedule: a thread's consecutive tasks share one head's keys and
    // values, which stay in its cache.
#pragma omp for collapse(3) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const int64_t pos0 = b * L + blk * kMaxRows;
          const int rows = static_cast<int>(std::min<int64_t>(kMaxRows, L - blk * kMaxRows));
          for (int i = 0; i < rows; ++i) {
            const int64_t l = order[pos0 + i];
            const scalar_t* src = qp + b * qs0 + h * qs1 + l * qs2;
            float* qd = qbuf.ptr + i * Dp;
            for (int64_t d = 0; d < D; ++d) qd[d] = static_cast<float>(src[d * qs3]) * scale;
            for (int64_t d = D; d < Dp; ++d) qd[d] = 0.f;
            brow[i] = table.data() + (table_start[b] + bias_index[b * L + l]) * Sp;
          }
          for (int i0 = 0; i0 < rows;) {
            const int64_t r = sorted_region[pos0 + i0];
            int i1 = i0 + 1;
            while (i1 < rows && sorted_region[pos0 + i1] == r) ++i1;
            const float* kt = ktp + ((b * Rk + (k_per_region ? r : 0)) * H + h) * Dp * Sp;
            const float* vv = vvp + ((b * R + r) * H + h) * Sp * Dp;
            attend(qbuf.ptr + i0 * Dp, static_cast<int>(D), static_cast<int>(Dp), brow + i0, kt, vv,
                   static_cast<int>(S), static_cast<int>(Sp), key_tile, pbuf.ptr, obuf.ptr + i0 * Dp, i1 - i0);
            i0 = i1;
          }
          for (int i = 0; i < rows; ++i) {
            const int64_t l = order[pos0 + i];
            scalar_t* dst = op + ((b * L + l) * H + h) * D;
            const float* od = obuf.ptr + i * Dp;
            for (int64_t d = 0; d < D; ++d) dst[d] = static_cast<scalar_t>(od[d]);
          }
        }
      }
    }
  }
}

// q (B, H, L, D); k (B, H, S, D) or (B, R, H, S, D); v (B, R, H, S, D), any strides, one float dtype.
// q_region, q_cover (B, L) and token_owner (B, S) integer maps (broadcast views allowed). Returns
// (B, H, L, D) stored as (B, L, H, D). key_tile: keys per online-softmax tile (tests make it small to
// cross tiles). simd: -1 for the best the CPU runs, else at most 0 plain, 1 AVX2, 2 AVX-512.
at::Tensor region_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& q_region, const at::Tensor& q_cover,
                                const std::optional<at::Tensor>& token_owner, double scale, double mask_value,
                                int64_t key_tile, int64_t simd) {
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(),
              "region_attention (cpp) runs CPU tensors, got q on ", q.device());
  const auto dtype = q.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
                   "backend='cpp' supports float16, bfloat16 and float32 inputs, got ", dtype);
  TORCH_CHECK_TYPE(k.scalar_type() == dtype && v.scalar_type() == dtype,
                   "region_attention (cpp): q, k and v must share one dtype, got ", dtype, ", ", k.scalar_type(),
                   ", ", v.scalar_type());
  TORCH_CHECK(q.dim() == 4 && v.dim() == 5 && (k.dim() == 4 || k.dim() == 5),
              "region_attention (cpp): expected q (B, H, L, D), k (B, H, S, D) or (B, R, H, S, D), "
              "v (B, R, H, S, D)");
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), D = q.size(3), R = v.size(1), S = v.size(3);
  TORCH_CHECK(v.size(0) == B && v.size(2) == H && v.size(4) == D && R >= 1 && S >= 1,
              "region_attention (cpp): v must have shape (B, R, H, S, D) matching q");
  if (k.dim() == 4) {
    TORCH_CHECK(k.size(0) == B && k.size(1) == H && k.size(2) == S && k.size(3) == D,
                "region_attention (cpp): k must have shape (B, H, S, D) matching q and v");
  } else {
    TORCH_CHECK(k.sizes() == v.sizes(), "region_attention (cpp): k must have shape (B, R, H, S, D) like v");
  }
  TORCH_CHECK(q_region.dim() == 2 && q_region.size(0) == B && q_region.size(1) == L,
              "region_attention (cpp): q_region must have shape (B, L)");
  TORCH_CHECK(q_cover.dim() == 2 && q_cover.size(0) == B && q_cover.size(1) == L,
              "region_attention (cpp): q_cover must have shape (B, L)");
  if (token_owner.has_value()) {
    TORCH_CHECK(token_owner->dim() == 2 && token_owner->size(0) == B && token_owner->size(1) == S,
                "region_attention (cpp): token_owner must have shape (B, S)");
  }
  TORCH_CHECK(!std::isnan(mask_value) && mask_value != std::numeric_limits<double>::infinity(),
              "region_attention (cpp): mask_value must be -inf or finite, got ", mask_value);
  TORCH_CHECK(key_tile >= 1, "region_attention (cpp): key_tile must be >= 1, got ", key_tile);

  at::Tensor out = at::empty({B, L, H, D}, q.options());
  if (B == 0 || H == 0 || L == 0 || D == 0) return out.transpose(1, 2);

  // Routing maps as contiguous int64 (they may be broadcast views of an (L,) map: L values, cheap).
  const at::Tensor region = q_region.to(at::kLong).contiguous();
  const at::Tensor cover = q_cover.to(at::kLong).contiguous();
  at::Tensor owner;
  if (token_owner.has_value()) {
    owner = token_owner->to(at::kLong).contiguous();
    // Bits past 62 would make the shift in the kernel's mask undefined; the ops allow 31 objects.
    const int64_t hi = owner.numel() ? owner.max().item<int64_t>() : -1;
    TORCH_CHECK(hi < 63, "region_attention (cpp): token_owner values must be -1 or < 31, got ", hi);
  }
  const int tile = static_cast<int>(round_up(std::min<int64_t>(key_tile, round_up(S, kPad)), kPad));
  const int64_t level = simd < 0 ? best_simd_level() : std::min(simd, best_simd_level());
  const AttendFn attend = kernel_for(level);
  const float mv = static_cast<float>(mask_value);  // -inf stays -inf
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "region_attention_cpu", [&] {
    run<scalar_t>(q, k, v, region.data_ptr<int64_t>(), cover.data_ptr<int64_t>(),
                  token_owner.has_value() ? owner.data_ptr<int64_t>() : nullptr, static_cast<float>(scale), mv,
                  tile, attend, out);
  });
  return out.transpose(1, 2);
}

}  // namespace ale_cpp

// TORCH_EXTENSION_NAME is the module's name: ale_kernels._C's "_C" when setup.py builds it, the JIT name when
// ale_kernels/_cpp.py compiles it on first use.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.def("region_attention", &ale_cpp::region_attention_cpu,
        "Region-routed attention of CPU tensors; see ale_kernels.region_attention for the arguments.", py::arg("q"),
        py::arg("k"), py::arg("v"), py::arg("q_region"), py::arg("q_cover"), py::arg("token_owner"), py::arg("scale"),
        py::arg("mask_value"), py::arg("key_tile") = 256, py::arg("simd") = -1);
  // Which kernel copy simd=-1 picks here: 0 plain, 1 AVX2+FMA, 2 AVX-512 (for benchmark reports and tests).
  m.def("simd_level", &ale_cpp::best_simd_level, "The best kernel copy this CPU runs: 0 plain, 1 AVX2, 2 AVX-512.");
}
