// The fused decode step's own operations, in bf16 on CPUs with AVX512-BF16 (see
// decode_kernels.py): the attention of one new query position per row against that row's
// cached keys, and the small element-wise operations around the products (RMSNorm with the
// residual addition, the rotary embedding, SiLU times the up projection), one pass each where
// torch takes several operations with their fixed costs.
//
// torch's CPU attention kernel is built for blocks of queries; at one query a row it spends
// most of its time setting up and in products too small to fill the vector units. Here each
// (row, key-value head) is one task: the query heads sharing that key-value head are scored
// against its keys with AVX512-BF16 dot products (bf16 pairs summed into float32), the
// softmax is in float32, and the values are summed with the probabilities rounded to bf16,
// as torch's kernel does. Built by torch's extension builder with AVX512-BF16 enabled for the
// whole file: load it only on a CPU that has it.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int kMaxGroup = 16;  // query heads per key-value head
constexpr int kBlock = 8;      // keys scored together (one horizontal-sum tree)

// exp(x) as 2^n * p(r) with a Cody-Waite reduction and the minimax polynomial of Cephes'
// expf (relative error near 1e-7), for x in [-87, 88] (clamped there).
inline __m512 exp_clamped(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.f)), _mm512_set1_ps(88.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

// The eight horizontal sums of s[0..7], in order.
inline __m256 horizontal_sums(const __m512* s) {
  __m256 h[kBlock];
  for (int i = 0; i < kBlock; ++i)
    h[i] = _mm256_add_ps(_mm512_castps512_ps256(s[i]), _mm512_extractf32x8_ps(s[i], 1));
  const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(h[0], h[1]), _mm256_hadd_ps(h[2], h[3]));
  const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(h[4], h[5]), _mm256_hadd_ps(h[6], h[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

inline __m512 dot_pairs(__m512 acc, const at::BFloat16* a, const at::BFloat16* b) {
  return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(a), (__m512bh)_mm512_loadu_si512(b));
}

// out[g] = sum over positions u of probs[g][u] * values[u] * inverse_sums[g], for N query
// heads at once. Two positions at a time: their value vectors interleaved, one dpbf16 adds
// p[u] * v[u] + p[u+1] * v[u+1]; the lanes' order is put back when storing.
template <int D, int N>
void sum_values(const at::BFloat16* values, int64_t length, int64_t value_step,
                const at::BFloat16* probs, int64_t padded, const float* inverse_sums,
                at::BFloat16* out) {
  constexpr int kChunks = D / 32, kSums = 2 * kChunks;
  alignas(64) static const at::BFloat16 zeros[D] = {};
  __m512 acc[N][kSums];
  for (int g = 0; g < N; ++g)
    for (int a = 0; a < kSums; ++a) acc[g][a] = _mm512_setzero_ps();
  for (int64_t u = 0; u < length; u += 2) {
    const at::BFloat16* a = values + u * value_step;
    const at::BFloat16* b = u + 1 < length ? values + (u + 1) * value_step : zeros;
    __m512i pairs[kSums];
    for (int c = 0; c < kChunks; ++c) {
      const __m512i x = _mm512_loadu_si512(a + 32 * c), y = _mm512_loadu_si512(b + 32 * c);
      pairs[2 * c] = _mm512_unpacklo_epi16(x, y);
      pairs[2 * c + 1] = _mm512_unpackhi_epi16(x, y);
    }
    for (int g = 0; g < N; ++g) {
      int32_t both;
      std::memcpy(&both, probs + g * padded + u, sizeof both);
      const __m512bh p = (__m512bh)_mm512_set1_epi32(both);
      for (int k = 0; k < kSums; ++k) acc[g][k] = _mm512_dpbf16_ps(acc[g][k], (__m512bh)pairs[k], p);
    }
  }
  const __m512i first = _mm512_set_epi32(23, 22, 21, 20, 7, 6, 5, 4, 19, 18, 17, 16, 3, 2, 1, 0);
  const __m512i second =
      _mm512_set_epi32(31, 30, 29, 28, 15, 14, 13, 12, 27, 26, 25, 24, 11, 10, 9, 8);
  for (int g = 0; g < N; ++g) {
    const __m512 inverse = _mm512_set1_ps(inverse_sums[g]);
    for (int c = 0; c < kChunks; ++c) {
      const __m512 lo = acc[g][2 * c], hi = acc[g][2 * c + 1];
      const __m512 x = _mm512_mul_ps(_mm512_permutex2var_ps(lo, first, hi), inverse);
      const __m512 y = _mm512_mul_ps(_mm512_permutex2var_ps(lo, second, hi), inverse);
      _mm512_storeu_si512(out + g * D + 32 * c, (__m512i)_mm512_cvtne2ps_pbh(y, x));
    }
  }
}

// sum_values for `count` (1 to N) query heads, N fixed at compile time so the sums stay in
// registers.
template <int D, int N>
void sum_values_upto(int count, const at::BFloat16* values, int64_t length, int64_t value_step,
                     const at::BFloat16* probs, int64_t padded, const float* inverse_sums,
                     at::BFloat16* out) {
  if constexpr (N > 1)
    if (count < N)
      return sum_values_upto<D, N - 1>(count, values, length, value_step, probs, padded,
                                       inverse_sums, out);
  sum_values<D, N>(values, length, value_step, probs, padded, inverse_sums, out);
}

// Per-thread buffers, grown to the longest task.
struct Scratch {
  std::vector<float> scores;
  std::vector<at::BFloat16> probs;
  std::vector<__mmask16> kept;  // per 16 positions: which are live
};

struct Strides {
  int64_t row, head, position;
};

// One (row, key-value head): `group` queries of size D against `length` positions.
template <int D>
void attend(const at::BFloat16* query, const at::BFloat16* keys, const at::BFloat16* values,
            const bool* live, int64_t length, int64_t key_step, int64_t value_step, int group,
            float scale, at::BFloat16* out, Scratch& scratch) {
  constexpr int kChunks = D / 32;  // bf16 vectors of a head
  const int64_t padded = (length + 16) / 16 * 16;  // room for one more position, zero
  scratch.scores.resize(group * padded);
  scratch.probs.resize(group * padded);
  float* scores = scratch.scores.data();
  at::BFloat16* probs = scratch.probs.data();

  int64_t t = 0;
  for (; t + kBlock <= length; t += kBlock) {
    for (int g = 0; g < group; ++g) {
      __m512 s[kBlock];
      for (int i = 0; i < kBlock; ++i) {
        s[i] = _mm512_setzero_ps();
        for (int c = 0; c < kChunks; ++c)
          s[i] = dot_pairs(s[i], query + g * D + 32 * c, keys + (t + i) * key_step + 32 * c);
      }
      _mm256_storeu_ps(scores + g * padded + t,
                       _mm256_mul_ps(horizontal_sums(s), _mm256_set1_ps(scale)));
    }
  }
  for (; t < length; ++t)
    for (int g = 0; g < group; ++g) {
      __m512 s = _mm512_setzero_ps();
      for (int c = 0; c < kChunks; ++c)
        s = dot_pairs(s, query + g * D + 32 * c, keys + t * key_step + 32 * c);
      scores[g * padded + t] = _mm512_reduce_add_ps(s) * scale;
    }

  // softmax over the live positions (the others get probability 0), sums in float32
  scratch.kept.resize(padded / 16);
  for (int64_t u = 0; u < padded; u += 16) {
    const int64_t inside = std::clamp<int64_t>(length - u, 0, 16);
    const __m128i bytes =
        _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << inside) - 1), live + u);
    scratch.kept[u / 16] = _mm_test_epi8_mask(bytes, bytes);
  }
  float inverse_sums[kMaxGroup];
  for (int g = 0; g < group; ++g) {
    const float* row = scores + g * padded;
    __m512 top = _mm512_set1_ps(-INFINITY);
    for (int64_t u = 0; u < padded; u += 16)
      top = _mm512_mask_max_ps(top, scratch.kept[u / 16], top, _mm512_loadu_ps(row + u));
    const __m512 most = _mm512_set1_ps(_mm512_reduce_max_ps(top));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t u = 0; u < padded; u += 16) {
      const __m512 e = _mm512_maskz_mov_ps(
          scratch.kept[u / 16], exp_clamped(_mm512_sub_ps(_mm512_loadu_ps(row + u), most)));
      sum = _mm512_add_ps(sum, e);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(probs + g * padded + u),
                          (__m256i)_mm512_cvtneps_pbh(e));
    }
    inverse_sums[g] = 1.f / _mm512_reduce_add_ps(sum);
  }

  constexpr int kAtOnce = 24 / (2 * kChunks);  // query heads whose sums fit in registers
  for (int g0 = 0; g0 < group; g0 += kAtOnce)
    sum_values_upto<D, kAtOnce>(std::min(kAtOnce, group - g0), values, length, value_step,
                                probs + g0 * padded, padded, inverse_sums + g0,
                                out + g0 * D);
}

// query [rows, kv_heads, group, D] (contiguous), keys and values [rows, kv_heads, >= T, D]
// (each position's D numbers contiguous), live [rows, T] (false: a padding position).
at::Tensor decode_attention(const at::Tensor& query, const at::Tensor& keys,
                            const at::Tensor& values, const at::Tensor& live, double scale) {
  TORCH_CHECK(query.dim() == 4 && keys.dim() == 4 && values.dim() == 4 && live.dim() == 2,
              "decode_attention: query, keys, values are 4-D and live 2-D");
  TORCH_CHECK(query.scalar_type() == at::kBFloat16 && keys.scalar_type() == at::kBFloat16 &&
                  values.scalar_type() == at::kBFloat16 && live.scalar_type() == at::kBool,
              "decode_attention: bf16 query, keys and values and a bool mask");
  const int64_t rows = query.size(0), heads = query.size(1), group = query.size(2),
                size = query.size(3), length = live.size(1);
  TORCH_CHECK(size == 64 || size == 128, "decode_attention: head size 64 or 128");
  TORCH_CHECK(group >= 1 && group <= kMaxGroup, "decode_attention: 1 to 16 query heads a group");
  TORCH_CHECK(query.is_contiguous() && live.stride(1) == 1 && keys.stride(3) == 1 &&
                  values.stride(3) == 1,
              "decode_attention: contiguous query, mask rows and head vectors");
  for (const auto* t : {&keys, &values})
    TORCH_CHECK(t->size(0) == rows && t->size(1) == heads && t->size(2) >= length &&
                    t->size(3) == size,
                "decode_attention: keys and values must match the query and the mask");
  TORCH_CHECK(live.size(0) == rows && length >= 1, "decode_attention: one mask row per row");

  auto out = at::empty_like(query);
  const auto* q = query.data_ptr<at::BFloat16>();
  const auto* k = keys.data_ptr<at::BFloat16>();
  const auto* v = values.data_ptr<at::BFloat16>();
  const bool* m = live.data_ptr<bool>();
  auto* o = out.data_ptr<at::BFloat16>();
  const Strides ks{keys.stride(0), keys.stride(1), keys.stride(2)};
  const Strides vs{values.stride(0), values.stride(1), values.stride(2)};
  const int64_t mask_stride = live.stride(0);
  const float fscale = static_cast<float>(scale);
  const int g = static_cast<int>(group);
  at::parallel_for(0, rows * heads, 1, [&](int64_t begin, int64_t end) {
    Scratch scratch;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r = task / heads, h = task % heads;
      // positions before the row's first live one (its prompt's left padding) are skipped
      const bool* row_live = m + r * mask_stride;
      int64_t skip = std::find(row_live, row_live + length, true) - row_live;
      if (skip == length) skip = 0;
      const auto* qt = q + task * group * size;
      const auto* kt = k + r * ks.row + h * ks.head + skip * ks.position;
      const auto* vt = v + r * vs.row + h * vs.head + skip * vs.position;
      auto* ot = o + task * group * size;
      if (size == 64)
        attend<64>(qt, kt, vt, row_live + skip, length - skip, ks.position, vs.position, g,
                   fscale, ot, scratch);
      else
        attend<128>(qt, kt, vt, row_live + skip, length - skip, ks.position, vs.position, g,
                    fscale, ot, scratch);
    }
  });
  return out;
}

// ---- element-wise operations around the products ------------------------------------------
// Each rounds to bf16 where transformers' Llama code does (its operations on bf16 tensors
// compute in float32 and round each result), so they differ from it only where a float32
// sum is taken in another order (RMSNorm's mean) or exp differs in its last bits (SiLU).

inline __m512 load_bf16(const at::BFloat16* p) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

inline void store_bf16(at::BFloat16* p, __m512 x) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(x));
}

inline __m512 round_bf16(__m512 x) {
  const __m256i rounded = (__m256i)_mm512_cvtneps_pbh(x);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(rounded), 16));
}

void check_rows(const at::Tensor& x, const char* what) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16 && x.stride(1) == 1 &&
                  x.size(1) % 16 == 0,
              "decode kernels: ", what,
              " must be bf16 [rows, features] with contiguous rows, features divisible by 16");
}

// (h + delta, RMSNorm(h + delta)) with Llama's RMSNorm: x * rsqrt(mean(x^2) + eps) in float32,
// rounded, times the weight; without delta, (h, RMSNorm(h)).
std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& h,
                                                const c10::optional<at::Tensor>& delta,
                                                const at::Tensor& weight, double eps) {
  check_rows(h, "the hidden state");
  const bool adding = delta.has_value() && delta->defined();
  if (adding) {
    check_rows(*delta, "the addition");
    TORCH_CHECK(delta->sizes() == h.sizes(), "decode kernels: the addition's shape is h's");
  }
  const int64_t rows = h.size(0), n = h.size(1);
  TORCH_CHECK(weight.numel() == n && weight.is_contiguous() &&
                  weight.scalar_type() == at::kBFloat16,
              "decode kernels: a bf16 norm weight of the hidden size");
  at::Tensor sum = adding ? at::empty({rows, n}, h.options()) : h;
  auto out = at::empty({rows, n}, h.options());
  const auto* a = h.data_ptr<at::BFloat16>();
  const auto* b = adding ? delta->data_ptr<at::BFloat16>() : nullptr;
  auto* c = sum.data_ptr<at::BFloat16>();
  const auto* w = weight.data_ptr<at::BFloat16>();
  auto* o = out.data_ptr<at::BFloat16>();
  const int64_t a_stride = h.stride(0), b_stride = adding ? delta->stride(0) : 0,
                c_stride = sum.stride(0);
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      at::BFloat16* x = c + r * c_stride;
      if (adding)
        for (int64_t i = 0; i < n; i += 16)
          store_bf16(x + i, _mm512_add_ps(load_bf16(a + r * a_stride + i),
                                          load_bf16(b + r * b_stride + i)));
      __m512 squares = _mm512_setzero_ps();
      for (int64_t i = 0; i < n; i += 16) {
        const __m512 v = load_bf16(x + i);
        squares = _mm512_fmadd_ps(v, v, squares);
      }
      const float variance = _mm512_reduce_add_ps(squares) / static_cast<float>(n);
      const __m512 scale = _mm512_set1_ps(1.f / std::sqrt(variance + static_cast<float>(eps)));
      for (int64_t i = 0; i < n; i += 16)
        store_bf16(o + r * n + i, _mm512_mul_ps(load_bf16(w + i),
                                                round_bf16(_mm512_mul_ps(load_bf16(x + i), scale))));
    }
  });
  return {sum, out};
}

// The rotary embedding of the query and key heads of a q/k/v product's rows [rows,
// (heads + 2 kv_heads) * size]: x * cos + rotate_half(x) * sin, each product and the sum
// rounded as in transformers. Returns q [rows, heads, size] and k [rows, kv_heads, size].
std::tuple<at::Tensor, at::Tensor> rotary(const at::Tensor& qkv, const at::Tensor& cos,
                                          const at::Tensor& sin, int64_t heads,
                                          int64_t kv_heads) {
  check_rows(qkv, "the q/k/v product");
  check_rows(cos, "cos");
  check_rows(sin, "sin");
  const int64_t rows = qkv.size(0), size = cos.size(1), half = size / 2;
  TORCH_CHECK(qkv.size(1) == (heads + 2 * kv_heads) * size && half % 16 == 0 &&
                  cos.size(0) == rows && sin.sizes() == cos.sizes(),
              "decode kernels: q/k/v rows of (heads + 2 kv_heads) * head size, cos and sin "
              "[rows, head size], head size divisible by 32");
  auto q = at::empty({rows, heads, size}, qkv.options());
  auto k = at::empty({rows, kv_heads, size}, qkv.options());
  const auto* x = qkv.data_ptr<at::BFloat16>();
  const auto* c = cos.data_ptr<at::BFloat16>();
  const auto* s = sin.data_ptr<at::BFloat16>();
  auto* qo = q.data_ptr<at::BFloat16>();
  auto* ko = k.data_ptr<at::BFloat16>();
  const __m512 negative = _mm512_set1_ps(-0.f);
  for (int64_t r = 0; r < rows; ++r) {
    const auto* cr = c + r * cos.stride(0);
    const auto* sr = s + r * sin.stride(0);
    for (int64_t head = 0; head < heads + kv_heads; ++head) {
      const auto* in = x + r * qkv.stride(0) + head * size;
      auto* out = head < heads ? qo + (r * heads + head) * size
                               : ko + (r * kv_heads + head - heads) * size;
      for (int64_t i = 0; i < half; i += 16) {
        const __m512 a = load_bf16(in + i), b = load_bf16(in + half + i);
        store_bf16(out + i, _mm512_add_ps(
                                round_bf16(_mm512_mul_ps(a, load_bf16(cr + i))),
                                round_bf16(_mm512_mul_ps(_mm512_xor_ps(b, negative),
                                                         load_bf16(sr + i)))));
        store_bf16(out + half + i,
                   _mm512_add_ps(round_bf16(_mm512_mul_ps(b, load_bf16(cr + half + i))),
                                 round_bf16(_mm512_mul_ps(a, load_bf16(sr + half + i)))));
      }
    }
  }
  return {q, k};
}

// silu(gate) * up of a gate/up product's rows [rows, 2 * inner] (gate first).
at::Tensor silu_mul(const at::Tensor& gate_up) {
  check_rows(gate_up, "the gate/up product");
  const int64_t rows = gate_up.size(0), inner = gate_up.size(1) / 2;
  TORCH_CHECK(inner % 16 == 0, "decode kernels: an MLP width divisible by 16");
  auto out = at::empty({rows, inner}, gate_up.options());
  const auto* x = gate_up.data_ptr<at::BFloat16>();
  auto* o = out.data_ptr<at::BFloat16>();
  const int64_t stride = gate_up.stride(0);
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      for (int64_t i = 0; i < inner; i += 16) {
        const __m512 g = load_bf16(x + r * stride + i), u = load_bf16(x + r * stride + inner + i);
        const __m512 e = exp_clamped(_mm512_sub_ps(_mm512_setzero_ps(), g));
        const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.f), e));
        store_bf16(o + r * inner + i, _mm512_mul_ps(round_bf16(silu), u));
      }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(rlhfx, m) {
  m.def("decode_attention(Tensor query, Tensor keys, Tensor values, Tensor live, float scale) "
        "-> Tensor");
  m.def("add_rms_norm(Tensor h, Tensor? delta, Tensor weight, float eps) -> (Tensor, Tensor)");
  m.def("rotary(Tensor qkv, Tensor cos, Tensor sin, int heads, int kv_heads) -> (Tensor, Tensor)");
  m.def("silu_mul(Tensor gate_up) -> Tensor");
}

TORCH_LIBRARY_IMPL(rlhfx, CPU, m) {
  m.impl("decode_attention", &decode_attention);
  m.impl("add_rms_norm", &add_rms_norm);
  m.impl("rotary", &rotary);
  m.impl("silu_mul", &silu_mul);
}
