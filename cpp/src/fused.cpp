// Fused chains of an inverted-residual block: [1x1 expand] -> depthwise -> 1x1 project [+ residual].
// The output is made one band of rows at a time: the expand computes the input rows the band's
// depthwise window reads (rows shared by two bands are computed by both), the depthwise layer runs on
// those rows as an image of its own (its top padding only in the first band; rows past the image read
// the zero padding of its plane), and the project writes the band's rows of the output. The expanded
// and the depthwise tensors thus live only a band at a time, in the workspace, and stay in L2. A
// stride-2 depthwise layer reads rows split into even and odd columns (see split()). Threads take
// whole bands when there are enough of them, else they split each layer's work.
#include <algorithm>
#include <cstring>

#include "gprt/gprt.h"
#include "gprt/vec.h"

namespace gprt {

namespace {

struct Band {
    int64_t oh0, oh1;  // output rows
    int64_t i0, i1;    // input rows of the depthwise window
    ConvShape dw;      // the depthwise layer on rows [i0, i1) alone
};

int64_t num_bands(const FusedShape& s) { return (s.dw.OH + s.band - 1) / s.band; }

Band band(const FusedShape& s, int64_t b) {
    const ConvShape& d = s.dw;
    Band r;
    r.oh0 = b * s.band;
    r.oh1 = std::min(d.OH, r.oh0 + s.band);
    int64_t lo = r.oh0 * d.SH - d.PH, hi = (r.oh1 - 1) * d.SH - d.PH + (d.KH - 1) * d.DH + 1;
    r.i0 = std::max<int64_t>(0, lo);
    r.i1 = std::min(d.H, hi);
    r.dw = d;
    r.dw.N = 1;
    r.dw.H = r.i1 - r.i0;
    r.dw.PH = r.i0 - lo;
    r.dw.OH = r.oh1 - r.oh0;
    return r;
}

size_t pointwise_ws(const PointwiseShape& p, int64_t P, int threads) {
    return p.nb == 0 && p.OC > 0 ? gemm_workspace(p.OC, P, p.C, threads) : 0;
}

// y[OC rows ldy apart] = act(W x[C rows ldx apart] + b) over P pixels
void pointwise(Pool* pool, float* ws, const PointwiseShape& p, const PointwiseWeights& w, int64_t P, const float* x,
               int64_t ldx, float* y, int64_t ldy) {
    if (p.nb == 0)
        gemm(pool, ws, p.OC, P, p.C, w.w, p.C, x, ldx, y, ldy, w.bias, w.bias ? kBiasRow : kNoBias, w.act);
    else
        spmm_block_strided(pool, p.nb, p.OC, p.C, P, w.counts, w.incs, w.w, w.bias, x, ldx, y, ldy, w.act);
}

// A stride-2 depthwise layer after an expand reads rows split into even and odd columns (dw_s2_split):
// the expand reads its input rows split so (split_columns), and so writes them.
bool split(const FusedShape& s) { return s.expand.OC > 0 && dw_split_columns(s.dw); }

// One worker's buffers (floats): the expanded rows, the depthwise band, the kernels' own scratch, and
// the input rows split into even and odd columns.
struct Layout {
    int64_t ebuf, dbuf, scratch, sbuf, per;
};

Layout layout(const FusedShape& s, int inner_threads) {
    const ConvShape& d = s.dw;
    Layout l{0, 0, 0, 0, 0};
    size_t scratch = 0;
    for (int64_t b = 0; b < num_bands(s); b++) {
        Band r = band(s, b);
        l.ebuf = std::max(l.ebuf, d.C * r.dw.H * d.W);
        l.dbuf = std::max(l.dbuf, d.C * r.dw.OH * d.OW);
        scratch = std::max(scratch, conv_workspace(r.dw, inner_threads));
        scratch = std::max(scratch, pointwise_ws(s.expand, r.dw.H * d.W, inner_threads));
        scratch = std::max(scratch, pointwise_ws(s.project, r.dw.OH * d.OW, inner_threads));
        if (split(s)) {
            l.sbuf = std::max(l.sbuf, s.expand.C * r.dw.H * d.W);
            scratch = std::max(scratch, dw_s2_split_workspace(r.dw));
        }
    }
    l.ebuf = (l.ebuf + 15) / 16 * 16;  // keeps every buffer 64-byte aligned
    l.dbuf = (l.dbuf + 15) / 16 * 16;
    l.scratch = ((int64_t)scratch / 4 + 15) / 16 * 16;
    l.sbuf = (l.sbuf + 15) / 16 * 16;
    l.per = l.ebuf + l.dbuf + l.scratch + l.sbuf;
    return l;
}

bool by_bands(const FusedShape& s, int threads) { return threads <= 1 || s.dw.N * num_bands(s) >= threads; }

}  // namespace

size_t fused_workspace(const FusedShape& s, int threads) {
    bool bands = by_bands(s, threads);
    Layout l = layout(s, bands ? 1 : threads);
    return (size_t)(bands ? threads : 1) * (size_t)l.per * sizeof(float);
}

void fused_block(Pool* pool, float* ws, const FusedShape& s, const PointwiseWeights& expand, const float* dw_w,
                 const float* dw_b, Act dw_act, const PointwiseWeights& project, const float* x, const float* res,
                 Act res_act, float* y) {
    const ConvShape& d = s.dw;
    const int threads = pool_size(pool);
    const bool bands = by_bands(s, threads);
    const Layout l = layout(s, bands ? 1 : threads);
    Pool* inner = bands ? nullptr : pool;
    const int64_t nb = num_bands(s), HW = d.H * d.W, OHW = d.OH * d.OW;
    const int64_t cin = s.expand.OC ? s.expand.C : d.C, cout = s.project.OC;
    auto run = [&](int64_t unit, int worker) {
        const int64_t n = unit / nb;
        const Band r = band(s, unit % nb);
        float* ebuf = ws + worker * l.per;
        float* dbuf = ebuf + l.ebuf;
        float* scratch = dbuf + l.dbuf;
        float* sbuf = scratch + l.scratch;
        const float* xn = x + n * cin * HW + r.i0 * d.W;
        const int64_t pin = r.dw.H * d.W, pout = r.dw.OH * d.OW;
        if (split(s)) {
            for (int64_t c = 0; c < cin; c++) split_columns(r.dw.H, d.W, xn + c * HW, sbuf + c * pin);
            pointwise(inner, scratch, s.expand, expand, pin, sbuf, pin, ebuf, pin);
            dw_s2_split(inner, scratch, r.dw, ebuf, dw_w, dw_b, dbuf, dw_act);
        } else {
            if (s.expand.OC)
                pointwise(inner, scratch, s.expand, expand, pin, xn, HW, ebuf, pin);
            else  // the depthwise kernels read channels of contiguous rows
                for (int64_t c = 0; c < d.C; c++) std::memcpy(ebuf + c * pin, xn + c * HW, sizeof(float) * pin);
            conv2d(inner, scratch, r.dw, ebuf, dw_w, dw_b, dbuf, dw_act);
        }
        float* yb = y + n * cout * OHW + r.oh0 * d.OW;
        pointwise(inner, scratch, s.project, project, pout, dbuf, pout, yb, OHW);
        if (res) add_residual(cout, OHW, pout, res + n * cout * OHW + r.oh0 * d.OW, yb, res_act);
    };
    if (bands)
        parallel_for(pool, d.N * nb, [&](int64_t b0, int64_t e0, int worker) {
            for (int64_t u = b0; u < e0; u++) run(u, worker);
        });
    else
        for (int64_t u = 0; u < d.N * nb; u++) run(u, 0);
}

}  // namespace gprt
