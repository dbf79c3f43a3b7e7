// A small thread pool: parallel_for hands one contiguous chunk of [0, n) to every worker and runs
// chunk 0 on the calling thread. wasm32 (WASI, no threads) and threads <= 1 run inline.
#include "gprt/gprt.h"

#if !defined(__wasm__)
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
struct Pool {
    int n = 1;
    std::vector<std::thread> workers;
    std::mutex mu;
    std::condition_variable wake, done;
    RangeFn job = nullptr;
    void* ctx = nullptr;
    int64_t total = 0;
    int parts = 0;
    int pending = 0;
    uint64_t generation = 0;
    bool stop = false;
};

static void chunk(int64_t n, int parts, int i, int64_t* b, int64_t* e) {
    *b = n * i / parts;
    *e = n * (i + 1) / parts;
}

static void worker_main(Pool* p, int id) {
    uint64_t seen = 0;
    for (;;) {
        std::unique_lock<std::mutex> lock(p->mu);
        p->wake.wait(lock, [&] { return p->stop || p->generation != seen; });
        if (p->stop) return;
        seen = p->generation;
        RangeFn job = p->job;
        void* ctx = p->ctx;
        int64_t b, e;
        chunk(p->total, p->parts, id, &b, &e);
        bool active = id < p->parts;
        lock.unlock();
        if (active && b < e) job(ctx, b, e, id);
        lock.lock();
        if (--p->pending == 0) p->done.notify_one();
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
        p->stop = true;
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
        std::lock_guard<std::mutex> lock(p->mu);
        p->job = fn;
        p->ctx = ctx;
        p->total = n;
        p->parts = parts;
        p->pending = p->n - 1;
        p->generation++;
    }
    p->wake.notify_all();
    int64_t b, e;
    chunk(n, parts, 0, &b, &e);
    fn(ctx, b, e, 0);
    std::unique_lock<std::mutex> lock(p->mu);
    p->done.wait(lock, [&] { return p->pending == 0; });
}
#endif

}  // namespace gprt
