// Elementwise, data movement, pooling, reductions, norms, softmax, attention and resize.
// These are memory-bound; they are written so the compiler vectorises the contiguous inner loops.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "gprt/gprt.h"
#include "gprt/vec.h"

namespace gprt {

// ---- elementwise ----

static inline float apply_unary(Unary op, float x, float a, float b) {
    switch (op) {
        case U_RELU: return x > 0.f ? x : 0.f;
        case U_LEAKY_RELU: return x >= 0.f ? x : a * x;
        case U_GELU: return 0.5f * x * (1.f + std::erf(x * 0.70710678118654752f));
        case U_GELU_TANH: return 0.5f * x * (1.f + std::tanh(0.79788456080286536f * (x + 0.044715f * x * x * x)));
        case U_SILU: return x / (1.f + std::exp(-x));
        case U_SIGMOID: return 1.f / (1.f + std::exp(-x));
        case U_TANH: return std::tanh(x);
        case U_HARD_SWISH: return x * std::min(std::max(x + 3.f, 0.f), 6.f) / 6.f;
        case U_HARD_SIGMOID: return std::min(std::max(a * x + b, 0.f), 1.f);
        case U_CLIP: return std::min(std::max(x, a), b);
        case U_ERF: return std::erf(x);
        case U_EXP: return std::exp(x);
        case U_LOG: return std::log(x);
        case U_SQRT: return std::sqrt(x);
        case U_RSQRT: return 1.f / std::sqrt(x);
        case U_NEG: return -x;
        case U_ABS: return std::fabs(x);
        case U_RECIPROCAL: return 1.f / x;
        case U_SIN: return std::sin(x);
        case U_COS: return std::cos(x);
        case U_IDENTITY: return x;
    }
    return x;
}

void unary(Unary op, float a, float b, int64_t n, const float* x, float* y) {
    switch (op) {  // the cheap ones get their own loops so they vectorise
        case U_RELU:
            for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.f ? x[i] : 0.f;
            return;
        case U_CLIP:
            for (int64_t i = 0; i < n; i++) y[i] = std::min(std::max(x[i], a), b);
            return;
        case U_NEG:
            for (int64_t i = 0; i < n; i++) y[i] = -x[i];
            return;
        default:
            for (int64_t i = 0; i < n; i++) y[i] = apply_unary(op, x[i], a, b);
    }
}

static inline float apply_binary(Binary op, float a, float b) {
    switch (op) {
        case B_ADD: return a + b;
        case B_SUB: return a - b;
        case B_MUL: return a * b;
        case B_DIV: return a / b;
        case B_POW: return b == 2.f ? a * a : std::pow(a, b);
        case B_MAX: return std::max(a, b);
        case B_MIN: return std::min(a, b);
        default: return 0.f;
    }
}

// Walk a shape with up to two operand stride sets; fn(inner_count, out_offset, a_offset, b_offset, c_offset)
// runs over the innermost axis.
template <class F>
static void walk(int rank, const int64_t* shape, const int64_t* sa, const int64_t* sb, const int64_t* sc, F fn) {
    int64_t inner = rank ? shape[rank - 1] : 1;
    int64_t outer = 1;
    for (int d = 0; d + 1 < rank; d++) outer *= shape[d];
    int64_t idx[16] = {0};
    int64_t ao = 0, bo = 0, co = 0;
    for (int64_t o = 0; o < outer; o++) {
        fn(inner, o * inner, ao, bo, co);
        for (int d = rank - 2; d >= 0; d--) {  // odometer step over the outer axes
            idx[d]++;
            ao += sa ? sa[d] : 0;
            bo += sb ? sb[d] : 0;
            co += sc ? sc[d] : 0;
            if (idx[d] < shape[d]) break;
            ao -= (sa ? sa[d] : 0) * shape[d];
            bo -= (sb ? sb[d] : 0) * shape[d];
            co -= (sc ? sc[d] : 0) * shape[d];
            idx[d] = 0;
        }
    }
}

void binary(Binary op, int rank, const int64_t* shape, const int64_t* sa, const float* a, const int64_t* sb,
            const float* b, void* out, Act act) {
    int64_t ia = rank ? sa[rank - 1] : 0, ib = rank ? sb[rank - 1] : 0;
    bool clamp = act.lo != -kInf || act.hi != kInf;
    if (op == B_EQ || op == B_LT || op == B_GT) {
        uint8_t* y = static_cast<uint8_t*>(out);
        walk(rank, shape, sa, sb, nullptr, [&](int64_t n, int64_t yo, int64_t ao, int64_t bo, int64_t) {
            for (int64_t i = 0; i < n; i++) {
                float u = a[ao + i * ia], v = b[bo + i * ib];
                y[yo + i] = op == B_EQ ? u == v : (op == B_LT ? u < v : u > v);
            }
        });
        return;
    }
    float* y = static_cast<float*>(out);
    walk(rank, shape, sa, sb, nullptr, [&](int64_t n, int64_t yo, int64_t ao, int64_t bo, int64_t) {
        float* yr = y + yo;
        const float* ar = a + ao;
        const float* br = b + bo;
        if (ia == 1 && ib == 1 && op == B_ADD) {
            for (int64_t i = 0; i < n; i++) yr[i] = ar[i] + br[i];
        } else if (ia == 1 && ib == 1 && op == B_MUL) {
            for (int64_t i = 0; i < n; i++) yr[i] = ar[i] * br[i];
        } else if (ia == 1 && ib == 0 && op == B_MUL) {
            float s = br[0];
            for (int64_t i = 0; i < n; i++) yr[i] = ar[i] * s;
        } else if (ia == 1 && ib == 0 && op == B_ADD) {
            float s = br[0];
            for (int64_t i = 0; i < n; i++) yr[i] = ar[i] + s;
        } else {
            for (int64_t i = 0; i < n; i++) yr[i] = apply_binary(op, ar[i * ia], br[i * ib]);
        }
        if (clamp)
            for (int64_t i = 0; i < n; i++) yr[i] = std::min(std::max(yr[i], act.lo), act.hi);
    });
}

void where(int rank, const int64_t* shape, const int64_t* sc, const uint8_t* c, const int64_t* sa, const float* a,
           const int64_t* sb, const float* b, float* out) {
    int64_t ic = rank ? sc[rank - 1] : 0, ia = rank ? sa[rank - 1] : 0, ib = rank ? sb[rank - 1] : 0;
    walk(rank, shape, sa, sb, sc, [&](int64_t n, int64_t yo, int64_t ao, int64_t bo, int64_t co) {
        for (int64_t i = 0; i < n; i++) out[yo + i] = c[co + i * ic] ? a[ao + i * ia] : b[bo + i * ib];
    });
}

void channel_affine(int64_t N, int64_t C, int64_t inner, const float* x, const float* scale, const float* shift,
                    float* y) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            const float* xr = x + (n * C + c) * inner;
            float* yr = y + (n * C + c) * inner;
            float s = scale[c], t = shift[c];
            for (int64_t i = 0; i < inner; i++) yr[i] = xr[i] * s + t;
        }
}

void prelu(int64_t N, int64_t C, int64_t inner, const float* x, const float* slope, int64_t slope_stride, float* y) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            const float* xr = x + (n * C + c) * inner;
            float* yr = y + (n * C + c) * inner;
            float s = slope[c * slope_stride];
            for (int64_t i = 0; i < inner; i++) yr[i] = xr[i] >= 0.f ? xr[i] : s * xr[i];
        }
}

void add_residual(int64_t rows, int64_t ld, int64_t n, const float* res, float* y, Act act) {
    for (int64_t r = 0; r < rows; r++) {
        float* yr = y + r * ld;
        const float* rr = res + r * ld;
        int64_t t = 0;
        for (; t + VW <= n; t += VW) vstore(yr + t, vclamp(vload(yr + t) + vload(rr + t), act.lo, act.hi));
        if (t < n) {
            vf v = vload_part(yr + t, n - t) + vload_part(rr + t, n - t);
            vstore_part(yr + t, vclamp(v, act.lo, act.hi), n - t);
        }
    }
}

// ---- data movement ----

void copy_strided(int rank, const int64_t* shape, const int64_t* dst_strides, void* dst, const int64_t* src_strides,
                  const void* src, int elem) {
    char* d = static_cast<char*>(dst);
    const char* s = static_cast<const char*>(src);
    int64_t di = rank ? dst_strides[rank - 1] : 1, si = rank ? src_strides[rank - 1] : 1;
    walk(rank, shape, dst_strides, src_strides, nullptr, [&](int64_t n, int64_t, int64_t dof, int64_t sof, int64_t) {
        if (di == 1 && si == 1) {
            std::memcpy(d + dof * elem, s + sof * elem, (size_t)(n * elem));
        } else if (elem == 4) {
            float* dp = reinterpret_cast<float*>(d) + dof;
            const float* sp = reinterpret_cast<const float*>(s) + sof;
            for (int64_t i = 0; i < n; i++) dp[i * di] = sp[i * si];
        } else {
            for (int64_t i = 0; i < n; i++) std::memcpy(d + (dof + i * di) * elem, s + (sof + i * si) * elem, elem);
        }
    });
}

void fill(float* y, int64_t n, float v) { std::fill(y, y + n, v); }

void pad(int rank, const int64_t* in_shape, const int64_t* out_shape, const int64_t* begin, int mode, float value,
         const float* x, float* y) {
    int64_t total = 1;
    for (int d = 0; d < rank; d++) total *= out_shape[d];
    int64_t idx[16] = {0};
    for (int64_t o = 0; o < total; o++) {
        int64_t src = 0;
        bool inside = true;
        for (int d = 0; d < rank; d++) {
            int64_t i = idx[d] - begin[d], n = in_shape[d];
            if (i < 0 || i >= n) {
                if (mode == 0) {
                    inside = false;
                    break;
                }
                if (mode == 1) {  // reflect (no edge repeat); period 2n - 2
                    int64_t p = 2 * n - 2;
                    i = p > 0 ? ((i % p) + p) % p : 0;
                    if (i >= n) i = p - i;
                } else {
                    i = i < 0 ? 0 : n - 1;
                }
            }
            src = src * n + i;
        }
        y[o] = inside ? x[src] : value;
        for (int d = rank - 1; d >= 0; d--) {
            if (++idx[d] < out_shape[d]) break;
            idx[d] = 0;
        }
    }
}

void gather(int64_t outer, int64_t axis, int64_t inner, const float* data, int64_t nidx, const int64_t* idx,
            float* y) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < nidx; j++) {
            int64_t i = idx[j] < 0 ? idx[j] + axis : idx[j];
            i = std::min(std::max<int64_t>(i, 0), axis - 1);  // out-of-range indices clamp instead of reading wild memory
            std::memcpy(y + (o * nidx + j) * inner, data + (o * axis + i) * inner, sizeof(float) * inner);
        }
}

template <class T>
static double load_as(const void* p, int64_t i) {
    return (double)static_cast<const T*>(p)[i];
}

void cast(int from, int to, int64_t n, const void* x, void* y) {
    for (int64_t i = 0; i < n; i++) {
        double v = from == 0 ? load_as<float>(x, i)
                             : from == 1 ? load_as<int64_t>(x, i) : from == 2 ? load_as<uint8_t>(x, i)
                                                                               : load_as<int32_t>(x, i);
        switch (to) {
            case 0: static_cast<float*>(y)[i] = (float)v; break;
            case 1: static_cast<int64_t*>(y)[i] = (int64_t)v; break;  // truncates toward zero like C
            case 2: static_cast<uint8_t*>(y)[i] = v != 0.0; break;
            default: static_cast<int32_t*>(y)[i] = (int32_t)v; break;
        }
    }
}

// ---- pooling ----

// Separable: each output row first reduces its KH input rows into one padded row (vectorised over the
// row), then every output column reduces KW taps of that row (vectorised over output columns at stride
// 1; a strided pick of the stride-1 result otherwise). The pads hold -inf (max) or 0 (sum), so no tap
// is bounds-checked. The naive per-tap loop took 2.3 ms for ResNet-50's 64 x 112 x 112 max pool.
struct PoolRows {
    int64_t Wr, Wh;  // padded row floats; stride-1 window results per row
};
static PoolRows pool_rows(const PoolShape& s) {
    int64_t Wh = (s.OW - 1) * s.SW + 1;
    return {std::max(s.PW + s.W, Wh + (s.KW - 1) * s.DW) + VW, Wh};
}

size_t pool_workspace(const PoolShape& s, int threads) {
    PoolRows r = pool_rows(s);
    return (size_t)(s.OW + VW + threads * (r.Wr + r.Wh + 2 * VW)) * sizeof(float);  // + the column counts
}

// The taps of output position o (of one axis) that the average divides by: those inside the input, or
// inside input + explicit pads.
static int64_t pool_taps(int64_t o, int64_t K, int64_t S, int64_t P, int64_t D, int64_t n, int64_t end_pad,
                         int include_pad) {
    const int64_t lo = include_pad ? -P : 0, hi = include_pad ? n + end_pad : n;
    int64_t taps = 0;
    for (int64_t k = 0; k < K; k++) {
        int64_t i = o * S - P + k * D;
        taps += i >= lo && i < hi;
    }
    return taps;
}

template <bool MAX>
static void pool_plane(const PoolShape& s, const PoolRows& r, const float* xc, float* yc, float* row, float* h,
                       const float* cnt_w) {
    const float fill = MAX ? -kInf : 0.f;
    for (int64_t oh = 0; oh < s.OH; oh++) {
        std::fill(row, row + r.Wr, fill);
        float* rr = row + s.PW;
        int64_t rows = 0;  // taps inside the input
        for (int64_t kh = 0; kh < s.KH; kh++) {
            int64_t ih = oh * s.SH - s.PH + kh * s.DH;
            if (ih < 0 || ih >= s.H) continue;
            const float* xr = xc + ih * s.W;
            if (rows++ == 0)
                std::memcpy(rr, xr, sizeof(float) * s.W);
            else if (MAX)
                for (int64_t i = 0; i < s.W; i++) rr[i] = std::max(rr[i], xr[i]);
            else
                for (int64_t i = 0; i < s.W; i++) rr[i] += xr[i];
        }
        float* out = s.SW == 1 ? yc + oh * s.OW : h;
        std::memcpy(out, row, sizeof(float) * r.Wh);
        for (int64_t kw = 1; kw < s.KW; kw++) {  // one tap over the whole row at a time: contiguous, vectorised
            const float* t = row + kw * s.DW;
            if (MAX)
                for (int64_t j = 0; j < r.Wh; j++) out[j] = std::max(out[j], t[j]);
            else
                for (int64_t j = 0; j < r.Wh; j++) out[j] += t[j];
        }
        if (s.SW != 1)
            for (int64_t ow = 0; ow < s.OW; ow++) yc[oh * s.OW + ow] = h[ow * s.SW];
        if (MAX) continue;
        const float cnt_h = (float)pool_taps(oh, s.KH, s.SH, s.PH, s.DH, s.H, s.EH, s.count_include_pad);
        for (int64_t ow = 0; ow < s.OW; ow++) yc[oh * s.OW + ow] /= cnt_h * cnt_w[ow];
    }
}

template <bool MAX>
static void pool2d(Pool* pool, const PoolShape& s, const float* x, float* y, float* ws) {
    const PoolRows r = pool_rows(s);
    float* cnt_w = ws;  // per output column, shared by every row and plane (average only)
    if (!MAX)
        for (int64_t ow = 0; ow < s.OW; ow++)
            cnt_w[ow] = (float)pool_taps(ow, s.KW, s.SW, s.PW, s.DW, s.W, s.EW, s.count_include_pad);
    float* rows = ws + s.OW + VW;
    parallel_for(pool, s.N * s.C, [&](int64_t b, int64_t e, int worker) {
        float* row = rows + worker * (r.Wr + r.Wh + 2 * VW);
        for (int64_t nc = b; nc < e; nc++)
            pool_plane<MAX>(s, r, x + nc * s.H * s.W, y + nc * s.OH * s.OW, row, row + r.Wr + VW, cnt_w);
    });
}

void max_pool2d(Pool* pool, const PoolShape& s, const float* x, float* y, float* ws) {
    pool2d<true>(pool, s, x, y, ws);
}
void avg_pool2d(Pool* pool, const PoolShape& s, const float* x, float* y, float* ws) {
    pool2d<false>(pool, s, x, y, ws);
}

void adaptive_avg_pool2d(int64_t NC, int64_t H, int64_t W, int64_t OH, int64_t OW, const float* x, float* y) {
    if (OH == 1 && OW == 1) {  // global pooling: a vector sum per channel (a scalar sum is one long FP add chain)
        const int64_t n = H * W;
        for (int64_t nc = 0; nc < NC; nc++) {
            const float* xc = x + nc * n;
            vf acc[2] = {vf{}, vf{}};
            int64_t i = 0;
            for (; i + 2 * VW <= n; i += 2 * VW) {
                acc[0] += vload(xc + i);
                acc[1] += vload(xc + i + VW);
            }
            for (; i + VW <= n; i += VW) acc[0] += vload(xc + i);
            float lanes[VW];
            vstore(lanes, acc[0] + acc[1]);
            float sum = 0.f;
            for (int l = 0; l < VW; l++) sum += lanes[l];
            for (; i < n; i++) sum += xc[i];
            y[nc] = sum / (float)n;
        }
        return;
    }
    for (int64_t nc = 0; nc < NC; nc++) {
        const float* xc = x + nc * H * W;
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t h0 = oh * H / OH, h1 = ((oh + 1) * H + OH - 1) / OH;
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t w0 = ow * W / OW, w1 = ((ow + 1) * W + OW - 1) / OW;
                float sum = 0.f;
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++) sum += xc[h * W + w];
                y[(nc * OH + oh) * OW + ow] = sum / (float)((h1 - h0) * (w1 - w0));
            }
        }
    }
}

// ---- reductions, softmax, norms ----

void reduce(int kind, int rank, const int64_t* shape, const int64_t* in_strides, const int64_t* out_strides,
            const float* x, float* y, int64_t out_size, int64_t count) {
    std::fill(y, y + out_size, kind == 2 ? -kInf : 0.f);
    int64_t oi = rank ? out_strides[rank - 1] : 0, ii = rank ? in_strides[rank - 1] : 0;
    walk(rank, shape, in_strides, out_strides, nullptr, [&](int64_t n, int64_t, int64_t xo, int64_t yo, int64_t) {
        if (oi == 0) {
            float acc = y[yo];
            for (int64_t i = 0; i < n; i++) acc = kind == 2 ? std::max(acc, x[xo + i * ii]) : acc + x[xo + i * ii];
            y[yo] = acc;
        } else {
            for (int64_t i = 0; i < n; i++) {
                float& t = y[yo + i * oi];
                t = kind == 2 ? std::max(t, x[xo + i * ii]) : t + x[xo + i * ii];
            }
        }
    });
    if (kind == 1)
        for (int64_t i = 0; i < out_size; i++) y[i] /= (float)count;
}

void softmax(int64_t outer, int64_t n, int64_t inner, const float* x, float* y) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in = 0; in < inner; in++) {
            const float* xr = x + o * n * inner + in;
            float* yr = y + o * n * inner + in;
            float m = -kInf;
            for (int64_t i = 0; i < n; i++) m = std::max(m, xr[i * inner]);
            float sum = 0.f;
            for (int64_t i = 0; i < n; i++) sum += (yr[i * inner] = std::exp(xr[i * inner] - m));
            float r = 1.f / sum;
            for (int64_t i = 0; i < n; i++) yr[i * inner] *= r;
        }
}

void layer_norm(int64_t rows, int64_t D, const float* x, const float* scale, const float* bias, float eps, float* y) {
    for (int64_t r = 0; r < rows; r++) {
        const float* xr = x + r * D;
        float* yr = y + r * D;
        double mean = 0.0, var = 0.0;
        for (int64_t i = 0; i < D; i++) mean += xr[i];
        mean /= (double)D;
        for (int64_t i = 0; i < D; i++) var += (xr[i] - mean) * (xr[i] - mean);
        float inv = (float)(1.0 / std::sqrt(var / (double)D + eps)), m = (float)mean;
        for (int64_t i = 0; i < D; i++) {
            float v = (xr[i] - m) * inv;
            if (scale) v *= scale[i];
            if (bias) v += bias[i];
            yr[i] = v;
        }
    }
}

void rms_norm(int64_t rows, int64_t D, const float* x, const float* scale, float eps, float* y) {
    for (int64_t r = 0; r < rows; r++) {
        const float* xr = x + r * D;
        float* yr = y + r * D;
        double ss = 0.0;
        for (int64_t i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / std::sqrt(ss / (double)D + eps));
        for (int64_t i = 0; i < D; i++) yr[i] = xr[i] * inv * (scale ? scale[i] : 1.f);
    }
}

void group_norm(int64_t N, int64_t C, int64_t inner, int64_t G, const float* x, const float* scale, const float* bias,
                float eps, float* y) {
    int64_t Cg = C / G, D = Cg * inner;
    for (int64_t n = 0; n < N; n++)
        for (int64_t g = 0; g < G; g++) {
            const float* xg = x + (n * C + g * Cg) * inner;
            float* yg = y + (n * C + g * Cg) * inner;
            double mean = 0.0, var = 0.0;
            for (int64_t i = 0; i < D; i++) mean += xg[i];
            mean /= (double)D;
            for (int64_t i = 0; i < D; i++) var += (xg[i] - mean) * (xg[i] - mean);
            float inv = (float)(1.0 / std::sqrt(var / (double)D + eps)), m = (float)mean;
            for (int64_t c = 0; c < Cg; c++) {
                float s = scale[g * Cg + c] * inv, t = bias[g * Cg + c];
                for (int64_t i = 0; i < inner; i++) yg[c * inner + i] = (xg[c * inner + i] - m) * s + t;
            }
        }
}

// ---- attention ----

size_t attention_workspace(int64_t, int64_t S) { return (size_t)(S + 16) * sizeof(float); }

void attention(float* ws, int64_t B, int64_t Hq, int64_t Hkv, int64_t L, int64_t S, int64_t E, int64_t Ev,
               const float* q, const float* k, const float* v, const void* mask, int mask_bool,
               const int64_t* ms, float scale, int causal, float* y) {
    float* p = ws;
    int64_t rep = Hq / Hkv;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++) {
            int64_t hk = h / rep;
            const float* qh = q + (b * Hq + h) * L * E;
            const float* kh = k + (b * Hkv + hk) * S * E;
            const float* vh = v + (b * Hkv + hk) * S * Ev;
            float* yh = y + (b * Hq + h) * L * Ev;
            for (int64_t l = 0; l < L; l++) {
                float m = -kInf;
                for (int64_t s = 0; s < S; s++) {
                    float d = 0.f;
                    for (int64_t e = 0; e < E; e++) d += qh[l * E + e] * kh[s * E + e];
                    d *= scale;
                    if (causal && s > l) d = -kInf;
                    if (mask) {
                        int64_t mo = b * ms[0] + h * ms[1] + l * ms[2] + s * ms[3];
                        if (mask_bool)
                            d = static_cast<const uint8_t*>(mask)[mo] ? d : -kInf;
                        else
                            d += static_cast<const float*>(mask)[mo];
                    }
                    p[s] = d;
                    m = std::max(m, d);
                }
                float sum = 0.f;
                for (int64_t s = 0; s < S; s++) sum += (p[s] = std::exp(p[s] - m));
                float r = 1.f / sum;
                float* yr = yh + l * Ev;
                std::fill(yr, yr + Ev, 0.f);
                for (int64_t s = 0; s < S; s++) {
                    float w = p[s] * r;
                    for (int64_t e = 0; e < Ev; e++) yr[e] += w * vh[s * Ev + e];
                }
            }
        }
}

// ---- resize ----

void resize2d(int64_t NC, int64_t H, int64_t W, int64_t OH, int64_t OW, const int32_t* h0, const int32_t* h1,
              const float* hf, const int32_t* w0, const int32_t* w1, const float* wf, const float* x, float* y) {
    for (int64_t nc = 0; nc < NC; nc++) {
        const float* xc = x + nc * H * W;
        float* yc = y + nc * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++) {
            const float* r0 = xc + h0[oh] * W;
            const float* r1 = xc + h1[oh] * W;
            float fh = hf[oh];
            for (int64_t ow = 0; ow < OW; ow++) {
                float a = r0[w0[ow]] + (r0[w1[ow]] - r0[w0[ow]]) * wf[ow];
                float b = r1[w0[ow]] + (r1[w1[ow]] - r1[w0[ow]]) * wf[ow];
                yc[oh * OW + ow] = a + (b - a) * fh;
            }
        }
    }
}

}  // namespace gprt
