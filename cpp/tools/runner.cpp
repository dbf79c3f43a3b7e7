// The command-line runner of a generated model: reads one .npy per input, runs, writes one .npy per output.
//   runner [--threads N] [--weights model_weights.bin] [--repeat N] [-o PREFIX] IN0.npy [IN1.npy ...]
// Outputs go to PREFIX0.npy, PREFIX1.npy, ... (PREFIX defaults to "out"). With --repeat N the model runs
// N times and the fastest run is printed as "min_ms <float>".
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "model.h"

static const char* kDescr[] = {"<f4", "<i8", "|b1", "<i4"};
static const size_t kSize[] = {4, 8, 1, 4};

static int fail(const std::string& msg) {
    std::fprintf(stderr, "runner: %s\n", msg.c_str());
    return 2;
}

static std::string shape_text(const int64_t* shape, int rank) {
    std::string s = "(";
    for (int d = 0; d < rank; d++) s += std::to_string(shape[d]) + (rank == 1 || d + 1 < rank ? "," : "");
    return s + ")";
}

// Reads a C-order .npy whose dtype and shape must equal the model input's.
static bool read_npy(const char* path, int dtype, const int64_t* shape, int rank, std::vector<char>& data,
                     std::string& err) {
    FILE* f = std::fopen(path, "rb");
    if (!f) return err = std::string(path) + ": cannot open", false;
    char magic[8];
    bool ok = std::fread(magic, 1, 8, f) == 8 && std::memcmp(magic, "\x93NUMPY", 6) == 0;
    uint32_t hlen = 0;
    if (ok && magic[6] == 1) {
        unsigned char b[2];
        ok = std::fread(b, 1, 2, f) == 2;
        hlen = b[0] | (b[1] << 8);
    } else if (ok) {
        unsigned char b[4];
        ok = std::fread(b, 1, 4, f) == 4;
        hlen = b[0] | (b[1] << 8) | (b[2] << 16) | ((uint32_t)b[3] << 24);
    }
    std::string header(hlen, '\0');
    ok = ok && hlen < (1u << 20) && std::fread(&header[0], 1, hlen, f) == hlen;
    if (!ok) {
        std::fclose(f);
        return err = std::string(path) + ": not an .npy file", false;
    }
    std::string compact;  // numpy writes "(1, 3)": compare without spaces
    for (char c : header)
        if (c != ' ') compact += c;
    std::string want_descr = std::string("'descr':'") + kDescr[dtype] + "'";
    std::string want_shape = std::string("'shape':") + shape_text(shape, rank);
    if (compact.find(want_descr) == std::string::npos || compact.find("'fortran_order':False") == std::string::npos ||
        compact.find(want_shape) == std::string::npos) {
        std::fclose(f);
        return err = std::string(path) + ": expected a C-order array " + kDescr[dtype] + " " + shape_text(shape, rank) +
                     ", got header " + header.substr(0, header.find('}') + 1),
               false;
    }
    size_t n = kSize[dtype];
    for (int d = 0; d < rank; d++) n *= (size_t)shape[d];
    data.resize(n);
    bool full = std::fread(data.data(), 1, n, f) == n;
    std::fclose(f);
    if (!full) return err = std::string(path) + ": truncated data", false;
    return true;
}

static bool write_npy(const std::string& path, int dtype, const int64_t* shape, int rank, const std::vector<char>& data) {
    std::string h = std::string("{'descr': '") + kDescr[dtype] + "', 'fortran_order': False, 'shape': " +
                    shape_text(shape, rank) + ", }";
    while ((10 + h.size() + 1) % 64) h += ' ';
    h += '\n';
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return false;
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(h.size() & 255),
                             (unsigned char)(h.size() >> 8)};
    bool ok = std::fwrite(pre, 1, 10, f) == 10 && std::fwrite(h.data(), 1, h.size(), f) == h.size() &&
              std::fwrite(data.data(), 1, data.size(), f) == data.size();
    return std::fclose(f) == 0 && ok;
}

int main(int argc, char** argv) {
    int threads = 1, repeat = 0;
    const char* weights = nullptr;
    std::string prefix = "out";
    std::vector<const char*> files;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        bool has_value = i + 1 < argc;
        if (a == "--threads" && has_value) threads = std::atoi(argv[++i]);
        else if (a == "--repeat" && has_value) repeat = std::atoi(argv[++i]);
        else if (a == "--weights" && has_value) weights = argv[++i];
        else if (a == "-o" && has_value) prefix = argv[++i];
        else if (a.rfind("-", 0) == 0) return fail("unknown option " + a + " (usage: runner [--threads N] [--weights FILE] [--repeat N] [-o PREFIX] IN.npy...)");
        else files.push_back(argv[i]);
    }
    int nin = gp_model_num_inputs(), nout = gp_model_num_outputs();
    if ((int)files.size() != nin) return fail("the model takes " + std::to_string(nin) + " input .npy file(s), got " + std::to_string(files.size()));
    if (!gp_model_weights_embedded() && !weights) weights = "model_weights.bin";
    std::vector<std::vector<char>> ins(nin), outs(nout);
    std::vector<const void*> in_ptrs(nin);
    std::vector<void*> out_ptrs(nout);
    for (int i = 0; i < nin; i++) {
        std::string err;
        if (!read_npy(files[i], gp_model_input_dtype(i), gp_model_input_shape(i), gp_model_input_rank(i), ins[i], err))
            return fail(err);
        in_ptrs[i] = ins[i].data();
    }
    for (int i = 0; i < nout; i++) {
        size_t n = kSize[gp_model_output_dtype(i)];
        for (int d = 0; d < gp_model_output_rank(i); d++) n *= (size_t)gp_model_output_shape(i)[d];
        outs[i].resize(n);
        out_ptrs[i] = outs[i].data();
    }
    gp_model* m = gp_model_create(weights, threads);
    if (!m) return fail("cannot create the model (weights file or memory)");
    double best = 1e30;
    for (int r = 0; r < (repeat > 0 ? repeat : 1); r++) {
        auto t0 = std::chrono::steady_clock::now();
        gp_model_run(m, in_ptrs.data(), out_ptrs.data());
        double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (ms < best) best = ms;
    }
    gp_model_destroy(m);
    if (repeat > 0) std::printf("min_ms %.6f\n", best);
    for (int i = 0; i < nout; i++)
        if (!write_npy(prefix + std::to_string(i) + ".npy", gp_model_output_dtype(i), gp_model_output_shape(i),
                       gp_model_output_rank(i), outs[i]))
            return fail("cannot write " + prefix + std::to_string(i) + ".npy");
    return 0;
}
