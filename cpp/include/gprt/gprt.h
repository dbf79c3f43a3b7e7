// gprt: the graphprune C++ runtime. Kernels for the ops of the graphprune IR, NC... layout, float32.
// Every kernel takes static shapes (the generated model code passes constants) and never allocates:
// scratch comes from a workspace the model allocates once at create time (see *_workspace()).
#pragma once
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace gprt {

// ---- threads: a small pool; parallel_for splits [0, n) into contiguous chunks, one per worker ----
struct Pool;
Pool* pool_create(int threads);  // threads <= 1 (and every wasm32 build): runs inline
void pool_destroy(Pool* pool);
int pool_size(const Pool* pool);
// fn(ctx, begin, end, worker); a plain function pointer, so that no call allocates (run() never does)
typedef void (*RangeFn)(void* ctx, int64_t begin, int64_t end, int worker);
void parallel_for_raw(Pool* pool, int64_t n, RangeFn fn, void* ctx);
template <class F>
inline void parallel_for(Pool* pool, int64_t n, F&& f) {
    typedef typename std::remove_reference<F>::type Fn;
    parallel_for_raw(pool, n, [](void* c, int64_t b, int64_t e, int w) { (*static_cast<Fn*>(c))(b, e, w); },
                     (void*)&f);
}

// How workers share a layer whose planes (of the tensor it reads or writes) have `pixels` pixels: bands
// of rows (pixel ranges) of every plane, or whole channels. Bands once each worker's share of a plane is
// 16 KB or more: shorter runs restart the hardware prefetchers at every plane (on two threads, a
// 96 x 28 x 28 depthwise layer took 21 us in bands against 11 us in channels, MobileNetV2's 56 x 56
// stride-2 one 32 against 16 us, and its 16 x 112 x 112 one 25 us in bands against 27). The layers that
// hand a tensor on split it the same way, so each worker reads what its own core wrote: a tensor written
// in bands and read in channels (or the reverse) moves half its bytes between the cores.
inline bool split_in_bands(int64_t pixels, int workers) {
    return workers > 1 && pixels * (int64_t)sizeof(float) >= 16384 * (int64_t)workers;
}

// ---- buffers: 64-byte aligned, freed with std::free (see memory.cpp) ----
void* alloc_buffer(size_t bytes);

// ---- activations fused into producers: y = clamp(x, lo, hi) (relu: [0, inf), relu6: [0, 6]) ----
struct Act {
    float lo, hi;
};
constexpr float kInf = __builtin_inff();
constexpr Act kNoAct{-kInf, kInf};

// ---- dense ----
// C[M,N] = A[M,K] B[K,N] (row-major, leading dims lda/ldb/ldc) + bias, then the activation.
// bias: nullptr, per row (bias_per_row) or per column. Threads split the columns.
enum BiasKind { kNoBias = 0, kBiasRow = 1, kBiasCol = 2 };
size_t gemm_workspace(int64_t M, int64_t N, int64_t K, int threads);
void gemm(Pool* pool, float* ws, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, float* C, int64_t ldc, const float* bias, BiasKind bias_kind, Act act);

// y[r, o] = x[r, :] . W[o, :] + bias[o], then the activation: a linear layer on a few rows (one token,
// one pooled image) reads W once in its own [OUT, IN] layout instead of packing it. Threads split OUT.
void gemv(Pool* pool, int64_t rows, int64_t OUT, int64_t IN, const float* x, const float* W, const float* bias,
          float* y, Act act);

// 2-D convolution, NCHW (1-D convs are passed with H = 1). Picks 1x1 GEMM, depthwise direct, or
// GEMM over im2col panels per group.
struct ConvShape {
    int64_t N, C, H, W, OC, OH, OW, KH, KW, SH, SW, PH, PW, DH, DW, G;
};
size_t conv_workspace(const ConvShape& s, int threads);
void conv2d(Pool* pool, float* ws, const ConvShape& s, const float* x, const float* w, const float* b, float* y,
            Act act);
// Transposed convolution; w is [C, OC/G, KH, KW]; PH/PW are the begin pads.
void conv_transpose2d(const ConvShape& s, const float* x, const float* w, const float* b, float* y);

// Batched matmul: for each batch index (coalesced batch dims, strides in elements, 0 = broadcast)
// C[b] = A[b] (MxK) B[b] (KxN).
void matmul(Pool* pool, float* ws, int nbatch_dims, const int64_t* batch_shape, const int64_t* a_strides,
            const int64_t* b_strides, int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C);
size_t matmul_workspace(int64_t M, int64_t N, int64_t K, int threads);

// ---- sparse: Y[M,P] = W[M,K] X[K,P] + bias, act; pixels P are the vector dimension ----
// Block-CSR in the XNNPACK layout with NB output rows per block (NB = 1 is plain CSR):
//   counts[M/NB + M%NB]: nonzero blocks per block row (the M%NB leftover rows come as NB=1 rows)
//   incs[nnzb + 1]: input-channel increments (the kernel scales them by its input row stride); the
//                   first entry is the first block's channel, the rest run across block rows and the
//                   last one wraps back, so the input pointer ends where it started
//   values[nnzb * NB]: NB weights per nonzero block
// K: input channels (rows of X). res: a residual added before the activation (Y = act(W X + bias + res),
// laid out like Y), or null.
void spmm_block(Pool* pool, int nb, int64_t M, int64_t K, int64_t P, const int32_t* counts, const int32_t* incs,
                const float* values, const float* bias, const float* x, float* y, Act act,
                const float* res = nullptr);
// The same with the rows of X ldx floats apart and the rows of Y ldy floats apart (a band of pixel rows).
void spmm_block_strided(Pool* pool, int nb, int64_t M, int64_t K, int64_t P, const int32_t* counts,
                        const int32_t* incs, const float* values, const float* bias, const float* x, int64_t ldx,
                        float* y, int64_t ldy, Act act, const float* res = nullptr);
// N:M: every group of m consecutive input channels keeps n values; values[M, K/m*n], idx[M, K/m*n]
// gives each value's position inside its group. (n, m) is one of (2, 4), (1, 4), (4, 8).
void spmm_nm(Pool* pool, int n, int m, int64_t M, int64_t K, int64_t P, const float* values, const uint8_t* idx,
             const float* bias, const float* x, float* y, Act act, const float* res = nullptr);

// ---- fused chains: [1x1 expand] -> depthwise -> 1x1 project [+ residual], one band of output rows at a time ----
// The expanded and the depthwise tensors of an inverted-residual block exist only one band of rows at a
// time (sized by the code generator to stay in L2), so they never travel to L3 and back.
// A 1x1 layer's format: nb = 0 dense (w is [OC, C]), else block-CSR with nb rows per block (1 = CSR; w are
// the values, see spmm_block).
struct PointwiseShape {
    int64_t C, OC;
    int nb;
};
struct PointwiseWeights {
    const float* w;
    const int32_t* counts;
    const int32_t* incs;
    const float* bias;
    Act act;
};
struct FusedShape {
    ConvShape dw;                    // the depthwise layer (its C is the expanded width)
    PointwiseShape expand, project;  // expand.OC == 0: no expand, the chain's input is the depthwise input
    int64_t band;                    // output rows per band
};
size_t fused_workspace(const FusedShape& s, int threads);
// The fused chains' stride-2 depthwise layers (3x3, left padding 1, even width) read rows stored as
// their even columns, then their odd ones: split_columns writes each row of W floats that way, and
// dw_s2_split computes the layer from it (see dense.cpp).
bool dw_split_columns(const ConvShape& s);
void split_columns(int64_t rows, int64_t W, const float* x, float* out);
size_t dw_s2_split_workspace(const ConvShape& s);
void dw_s2_split(Pool* pool, float* ws, const ConvShape& s, const float* x, const float* w, const float* b, float* y,
                 Act act);
// x: the chain's input; res: nullptr or a tensor shaped like y added to the project's output, then res_act.
void fused_block(Pool* pool, float* ws, const FusedShape& s, const PointwiseWeights& expand, const float* dw_w,
                 const float* dw_b, Act dw_act, const PointwiseWeights& project, const float* x, const float* res,
                 Act res_act, float* y);

// ---- elementwise ----
enum Unary {
    U_RELU, U_LEAKY_RELU, U_GELU, U_GELU_TANH, U_SILU, U_SIGMOID, U_TANH, U_HARD_SWISH, U_HARD_SIGMOID,
    U_CLIP, U_ERF, U_EXP, U_LOG, U_SQRT, U_RSQRT, U_NEG, U_ABS, U_RECIPROCAL, U_SIN, U_COS, U_IDENTITY
};
void unary(Unary op, float a, float b, int64_t n, const float* x, float* y);
enum Binary { B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_MAX, B_MIN, B_EQ, B_LT, B_GT };
// Broadcasting over a (coalesced) shape: strides in elements, 0 where an operand is broadcast.
// Comparisons write uint8 (bool) to out; the others write float and apply act.
void binary(Binary op, int rank, const int64_t* shape, const int64_t* sa, const float* a, const int64_t* sb,
            const float* b, void* out, Act act);
void where(int rank, const int64_t* shape, const int64_t* sc, const uint8_t* c, const int64_t* sa, const float* a,
           const int64_t* sb, const float* b, float* out);
// y[n, c, i] = x[n, c, i] * scale[c] + shift[c] (a batch norm that was not folded into a conv)
void channel_affine(int64_t N, int64_t C, int64_t inner, const float* x, const float* scale, const float* shift,
                    float* y);
void prelu(int64_t N, int64_t C, int64_t inner, const float* x, const float* slope, int64_t slope_stride, float* y);
// y = act(y + res) over `rows` rows of n floats, ld apart in both: a residual added after a layer
// computed its rows (sparse 1x1 layers and fused chains, a tile or band at a time while it is in cache)
void add_residual(int64_t rows, int64_t ld, int64_t n, const float* res, float* y, Act act);

// ---- data movement (elem: bytes per element) ----
// dst[sum i_k dst_strides_k] = src[sum i_k src_strides_k] over shape (strides in elements)
void copy_strided(int rank, const int64_t* shape, const int64_t* dst_strides, void* dst, const int64_t* src_strides,
                  const void* src, int elem);
void fill(float* y, int64_t n, float v);
void pad(int rank, const int64_t* in_shape, const int64_t* out_shape, const int64_t* begin, int mode, float value,
         const float* x, float* y);  // mode 0 constant, 1 reflect, 2 edge
void gather(int64_t outer, int64_t axis, int64_t inner, const float* data, int64_t nidx, const int64_t* idx,
            float* y);
void cast(int from, int to, int64_t n, const void* x, void* y);  // 0 f32, 1 i64, 2 u8 (bool), 3 i32

// ---- pooling, reduction, norms ----
struct PoolShape {
    int64_t N, C, H, W, OH, OW, KH, KW, SH, SW, PH, PW, DH, DW, EH, EW;  // EH/EW: end pads
    int count_include_pad;
};
size_t pool_workspace(const PoolShape& s, int threads);  // bytes
void max_pool2d(Pool* pool, const PoolShape& s, const float* x, float* y, float* ws);
void avg_pool2d(Pool* pool, const PoolShape& s, const float* x, float* y, float* ws);
void adaptive_avg_pool2d(int64_t NC, int64_t H, int64_t W, int64_t OH, int64_t OW, const float* x, float* y);
// kind 0 sum, 1 mean, 2 max; out strides have 0 on reduced axes; count = reduced elements
void reduce(int kind, int rank, const int64_t* shape, const int64_t* in_strides, const int64_t* out_strides,
            const float* x, float* y, int64_t out_size, int64_t count);
void softmax(int64_t outer, int64_t n, int64_t inner, const float* x, float* y);
// rows x D, normalised over D; scale/bias may be nullptr
void layer_norm(int64_t rows, int64_t D, const float* x, const float* scale, const float* bias, float eps, float* y);
void rms_norm(int64_t rows, int64_t D, const float* x, const float* scale, float eps, float* y);
void group_norm(int64_t N, int64_t C, int64_t inner, int64_t G, const float* x, const float* scale, const float* bias,
                float eps, float* y);

// ---- attention: q[B, Hq, L, E], k/v[B, Hkv, S, E|Ev]; mask (float or bool) with 4 strides ----
size_t attention_workspace(int64_t L, int64_t S);
void attention(float* ws, int64_t B, int64_t Hq, int64_t Hkv, int64_t L, int64_t S, int64_t E, int64_t Ev,
               const float* q, const float* k, const float* v, const void* mask, int mask_bool,
               const int64_t* mask_strides, float scale, int causal, float* y);

// ---- resize (1 or 2 spatial axes, 1-D passed as H = 1) ----
// Source tables come from the code generator (one coordinate rule, the interpreter's): output row i
// reads rows h0[i], h1[i] mixed by hf[i] (nearest: h0 == h1, hf == 0); the same for columns.
void resize2d(int64_t NC, int64_t H, int64_t W, int64_t OH, int64_t OW, const int32_t* h0, const int32_t* h1,
              const float* hf, const int32_t* w0, const int32_t* w1, const float* wf, const float* x, float* y);

}  // namespace gprt
