// A small thread pool: parallel_for hands one contiguous chunk of [0, n) to every worker and runs
// chunk 0 on the calling thread. wasm32 (WASI, no threads) and threads <= 1 run inline.
#include "gprt/gprt.h"

#if !defined(__wasm__)
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>
#endif

namespace gprt {

#if defined(__wasm__)
struct Pool {
    int n;
};
Pool* pool_create(int) { return new Pool{1}; }
void pool_destroy(Pool* pool) { delete pool; }
int pool_size(const Pool*) { return 1; }
void parallel_for_raw(Pool*, int64_t n, RangeFn fn, void* ctx) {
    if (n > 0) fn(ctx, 0, n, 0);
}
#else
// Workers and the caller spin briefly before sleeping: a model's layers hand out jobs back to back,
// tens of microseconds apart, and waking a thread blocked on a condition variable costs about that
// much per layer (two threads were slower than one on MobileNetV2). After kSpin rounds a worker
// sleeps, so an idle pool costs nothing.
struct Pool {
    int n = 1;
    std::vector<std::thread> workers;
    std::mutex mu;
    std::condition_variable wake, done;
    RangeFn job = nullptr;  // the job's fields are written before `generation` is released
    void* ctx = nullptr;
    int64_t total = 0;
    int parts = 0;
    std::atomic<int> pending{0};
    std::atomic<uint64_t> generation{0};
    std::atomic<bool> stop{false};
};

static constexpr int kSpin = 1 << 14;  // pause rounds, about 50-100 us

static inline void relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

static void chunk(int64_t n, int parts, int i, int64_t* b, int64_t* e) {
    *b = n * i / parts;
    *e = n * (i + 1) / parts;
}

static void worker_main(Pool* p, int id) {
    uint64_t seen = 0;
    for (;;) {
        uint64_t g = p->generation.load(std::memory_order_acquire);
        for (int i = 0; g == seen && i < kSpin && !p->stop.load(std::memory_order_relaxed); i++) {
            relax();
            g = p->generation.load(std::memory_order_acquire);
        }
        if (g == seen) {
            std::unique_lock<std::mutex> lock(p->mu);
            p->wake.wait(lock, [&] { return p->stop.load() || p->generation.load() != seen; });
            g = p->generation.load(std::memory_order_acquire);
        }
        if (p->stop.load()) return;
        seen = g;
        int64_t b, e;
        chunk(p->total, p->parts, id, &b, &e);
        if (id < p->parts && b < e) p->job(p->ctx, b, e, id);
        if (p->pending.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            std::lock_guard<std::mutex> lock(p->mu);
            p->done.notify_one();
        }
    }
}

Pool* pool_create(int threads) {
    Pool* p = new Pool;
    p->n = threads < 1 ? 1 : threads;
    for (int i = 1; i < p->n; i++) p->workers.emplace_back(worker_main, p, i);
    return p;
}

void pool_destroy(Pool* p) {
    if (!p) return;
    {
        std::lock_guard<std::mutex> lock(p->mu);
        p->stop.store(true);
    }
    p->wake.notify_all();
    for (auto& t : p->workers) t.join();
    delete p;
}

int pool_size(const Pool* p) { return p ? p->n : 1; }

void parallel_for_raw(Pool* p, int64_t n, RangeFn fn, void* ctx) {
    if (n <= 0) return;
    if (!p || p->n == 1 || n == 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    int parts = n < p->n ? (int)n : p->n;
    {
        std::lock_guard<std::mutex> lock(p->mu);  // a sleeping worker checks generation under mu
        p->job = fn;
        p->ctx = ctx;
        p->total = n;
        p->parts = parts;
        p->pending.store(p->n - 1, std::memory_order_relaxed);
        p->generation.fetch_add(1, std::memory_order_release);
    }
    p->wake.notify_all();
    int64_t b, e;
    chunk(n, parts, 0, &b, &e);
    fn(ctx, b, e, 0);
    for (int i = 0; i < kSpin && p->pending.load(std::memory_order_acquire) != 0; i++) relax();
    if (p->pending.load(std::memory_order_acquire) != 0) {
        std::unique_lock<std::mutex> lock(p->mu);
        p->done.wait(lock, [&] { return p->pending.load() == 0; });
    }
}
#endif

}  // namespace gprt
