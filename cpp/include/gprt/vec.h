// gprt: the tiny vector abstraction every kernel is written against.
// One width per build, chosen at compile time: AVX-512 (16 floats), AVX2/FMA (8), NEON, WASM SIMD128
// or SSE (4), or the portable scalar path (1; also forced with -DGPRT_SCALAR). GCC/Clang vector
// extensions give +, -, * (contracted to FMA under -ffp-contract=fast) on every ISA.
#pragma once
#include <cstdint>
#include <cstring>
#include <utility>

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
static inline void vtranspose(vf*) {}  // 1 x 1
#else
typedef float vf __attribute__((vector_size(GPRT_VW * 4)));
static inline vf vload(const float* p) {
    vf v;
    std::memcpy(&v, p, sizeof v);  // an unaligned vector load on every ISA
    return v;
}
static inline void vstore(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
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
