// gprt: the tiny vector abstraction every kernel is written against.
// One width per build, chosen at compile time: AVX-512 (16 floats), AVX2/FMA (8), NEON, WASM SIMD128
// or SSE (4), or the portable scalar path (1; also forced with -DGPRT_SCALAR). GCC/Clang vector
// extensions give +, -, * (contracted to FMA under -ffp-contract=fast) on every ISA.
#pragma once
#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__AVX512F__) && !defined(GPRT_SCALAR)
#include <immintrin.h>
#endif

#if defined(GPRT_SCALAR)
#define GPRT_VW 1
#elif defined(__AVX512F__)
#define GPRT_VW 16
#elif defined(__AVX2__)
#define GPRT_VW 8
#elif defined(__ARM_NEON) || defined(__wasm_simd128__) || defined(__SSE2__)
#define GPRT_VW 4
#else
#define GPRT_VW 1
#endif

#if defined(__clang__)
#define GPRT_UNROLL _Pragma("unroll")
#else
#define GPRT_UNROLL _Pragma("GCC unroll 16")
#endif

namespace gprt {

constexpr int VW = GPRT_VW;

#if GPRT_VW == 1
typedef float vf;
static inline vf vload(const float* p) { return *p; }
static inline void vstore(float* p, vf v) { *p = v; }
static inline vf vbcast(float s) { return s; }
static inline vf vclamp(vf v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }
static inline vf vmask(vf v, const int32_t* m) { return *m ? v : 0.f; }
static inline vf vload_part(const float* p, int64_t n) { return n > 0 ? *p : 0.f; }
static inline void vstore_part(float* p, vf v, int64_t n) {
    if (n > 0) *p = v;
}
static inline void vtranspose(vf*) {}  // 1 x 1
#else
typedef float vf __attribute__((vector_size(GPRT_VW * 4)));
static inline vf vload(const float* p) {
    vf v;
    std::memcpy(&v, p, sizeof v);  // an unaligned vector load on every ISA
    return v;
}
static inline void vstore(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
// The first n (<= VW) lanes only: zeros in the rest, nothing read or written past p + n. One masked
// instruction on AVX-512; elsewhere through a copy (no call: a memcpy of a variable size is one).
#if GPRT_VW == 16
static inline vf vload_part(const float* p, int64_t n) {
    return (vf)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
}
static inline void vstore_part(float* p, vf v, int64_t n) {
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
}
#else
static inline vf vload_part(const float* p, int64_t n) {
    float t[GPRT_VW] = {};
    for (int64_t i = 0; i < n; i++) t[i] = p[i];
    return vload(t);
}
static inline void vstore_part(float* p, vf v, int64_t n) {
    float t[GPRT_VW];
    std::memcpy(t, &v, sizeof v);
    for (int64_t i = 0; i < n; i++) p[i] = t[i];
}
#endif
static inline vf vbcast(float s) { return s - vf{}; }  // s - 0 == s exactly: folds to a broadcast
static inline vf vclamp(vf v, float lo, float hi) {  // lane-wise select: one max and one min per vector
    vf l = vbcast(lo), h = vbcast(hi);
    v = v < l ? l : v;
    return v > h ? h : v;
}
typedef int32_t vi __attribute__((vector_size(GPRT_VW * 4)));
// v where the lanes of the int32 mask m are all ones, +0 where they are 0 (bitwise: NaN and inf stay out)
static inline vf vmask(vf v, const int32_t* m) {
    vi mm;
    std::memcpy(&mm, m, sizeof mm);
    return (vf)((vi)v & mm);
}

// A VW x VW block held in VW vectors, transposed in log2(VW) rounds of two-vector shuffles (64 shuffles
// for 16 x 16, against 256 scalar loads and stores): round h swaps the off-diagonal h x h blocks of
// every 2h x 2h block, rows i and i + h exchanging lanes.
namespace detail {
constexpr int tr_lo(int h, int l) { return l % (2 * h) < h ? l : VW + l - h; }
constexpr int tr_hi(int h, int l) { return l % (2 * h) < h ? l + h : VW + l; }
template <int H, int... L>
static inline void tr_round(vf* r, std::integer_sequence<int, L...>) {
    for (int i = 0; i < VW; i++)
        if (i % (2 * H) < H) {
            vf a = r[i], b = r[i + H];
            r[i] = __builtin_shufflevector(a, b, tr_lo(H, L)...);
            r[i + H] = __builtin_shufflevector(a, b, tr_hi(H, L)...);
        }
}
}  // namespace detail
static inline void vtranspose(vf* r) {
    using L = std::make_integer_sequence<int, VW>;
    if constexpr (VW >= 16) detail::tr_round<8>(r, L{});
    if constexpr (VW >= 8) detail::tr_round<4>(r, L{});
    detail::tr_round<2>(r, L{});
    detail::tr_round<1>(r, L{});
}
#endif

}  // namespace gprt
