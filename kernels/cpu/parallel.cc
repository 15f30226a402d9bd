#include "kernels/cpu/parallel.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace kvcomm::kernels::cpu {
namespace {

thread_local bool inside_parallel_for = false;

class Pool {
 public:
  explicit Pool(int threads) : threads_(threads) {
    for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { Work(i); });
  }
  ~Pool() {
    {
      std::lock_guard lock(mu_);
      shutdown_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }
  int threads() const { return threads_; }

  void Run(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    std::lock_guard serial(run_mu_);
    {
      std::lock_guard lock(mu_);
      fn_ = &fn;
      n_ = n;
      pending_ = threads_ - 1;
      ++generation_;
    }
    wake_.notify_all();
    RunChunk(0);
    std::unique_lock lock(mu_);
    done_.wait(lock, [&] { return pending_ == 0; });
  }

 private:
  void RunChunk(int index) {
    int64_t chunk = (n_ + threads_ - 1) / threads_;
    int64_t begin = std::min<int64_t>(n_, index * chunk),
            end = std::min<int64_t>(n_, begin + chunk);
    inside_parallel_for = true;
    if (begin < end) (*fn_)(begin, end);
    inside_parallel_for = false;
  }
  void Work(int index) {
    uint64_t seen = 0;
    while (true) {
      {
        std::unique_lock lock(mu_);
        wake_.wait(lock, [&] { return shutdown_ || generation_ != seen; });
        if (shutdown_) return;
        seen = generation_;
      }
      RunChunk(index);
      std::lock_guard lock(mu_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex run_mu_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool shutdown_ = false;
};

Pool& GlobalPool() {
  static Pool pool([] {
    const char* env = std::getenv("KVCOMM_THREADS");
    int n = env ? std::atoi(env) : static_cast<int>(std::thread::hardware_concurrency());
    return std::clamp(n, 1, 256);
  }());
  return pool;
}

}  // namespace

int ParallelThreads() { return GlobalPool().threads(); }

void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (inside_parallel_for || n == 1 || GlobalPool().threads() == 1) {
    fn(0, n);
    return;
  }
  GlobalPool().Run(n, fn);
}

}  // namespace kvcomm::kernels::cpu
