// Concurrency: talk_conv's calls are const and the building blocks keep no state, so one layer object
// (README: "one layer may serve many threads") and the blocks may be used from several std::threads at
// once, each with its own outputs, on shared read-only inputs. Every result must be bitwise the result of
// the same call made alone (SPEC Numerics: deterministic). Each call also runs OpenMP inside it (its own
// team per calling thread), or serially when it is made from inside an OpenMP parallel region (the
// omp_in_parallel guard of cpu/parallel.hpp).
#include "util.hpp"

#include <atomic>
#include <functional>
#include <memory>
#include <thread>

#if TALKCONV_HAS_OPENMP
#include <omp.h>
#endif

using namespace tt;
namespace cpu = talkconv::cpu;

namespace {

// The layers shared by every thread: per storage type, one bidirectional and one causal.
template <class T>
struct layers {
  talkconv::talk_conv<T> bidir{talkconv::talk_config{32, 4, 7, 5, false}};
  talkconv::talk_conv<T> causal{talkconv::talk_config{32, 4, 9, 0, true}};
  const talkconv::talk_conv<T>& of(bool is_causal) const { return is_causal ? causal : bidir; }
};

// One job's inputs, shared read-only by every thread that runs it.
template <class T>
struct job {
  using A = talkconv::acc_t<T>;
  ref::problem pb;
  layout lay = layout::tbc;
  talkconv::dropout_params dp;
  std::vector<T> x, x_tbc, dy, W, bias;
  std::vector<A> d_o;
  std::vector<index_t> len;

  std::string str() const {
    return pb.str() + " layout=" + layout_name(lay) + " dtype=" + dtype_name<T>() + " p=" + std::to_string(dp.p);
  }
};

// T in {48, 700, 1100} (the serial path below 2^15 elements, OpenMP tasks above), B 1..3, C = 32.
template <class T>
job<T> make_job(std::uint64_t seed, bool causal) {
  job<T> j;
  std::mt19937_64 rng(seed);
  ref::problem& pb = j.pb;
  const long Ts[] = {48, 700, 1100};
  pb.T = Ts[uniform_int(rng, 0, 2)], pb.B = uniform_int(rng, 1, 3), pb.C = 32, pb.H = 4;
  pb.causal = causal, pb.L = causal ? 9 : 7, pb.M = causal ? 0 : 5;
  if (uniform_int(rng, 0, 1) == 0) {
    pb.lengths.resize(static_cast<size_t>(pb.B));
    for (auto& n : pb.lengths) n = uniform_int(rng, 0, pb.T);
  }
  j.lay = uniform_int(rng, 0, 1) == 0 ? layout::tbc : layout::btc;
  j.dp = uniform_int(rng, 0, 1) == 0 ? talkconv::dropout_params{} : talkconv::dropout_params{0.2f, seed, true};
  const vec x = normal_vec(rng, pb.x_size());
  j.x = to_layout<T>(x, j.lay, pb.T, pb.B, pb.C);
  j.x_tbc = to_layout<T>(x, layout::tbc, pb.T, pb.B, pb.C);
  j.dy = to_layout<T>(normal_vec(rng, pb.x_size()), j.lay, pb.T, pb.B, pb.C);
  j.W = to_store_vec<T>(normal_vec(rng, static_cast<size_t>(pb.P() * pb.C), 0.0, 0.2));
  j.bias = to_store_vec<T>(normal_vec(rng, static_cast<size_t>(pb.P())));
  j.d_o = to_layout<typename job<T>::A>(normal_vec(rng, pb.o_size()), j.lay, pb.T, pb.B, pb.P());
  j.len = lengths_of(pb);
  return j;
}

// Runs the layer (forward; backward with saved and with recomputed offsets), every building block, and
// (causal) a decoder over the first tokens; returns every output.
template <class T>
outputs run_job(const layers<T>& ls, const job<T>& j) {
  using A = talkconv::acc_t<T>;
  const ref::problem& pb = j.pb;
  const talkconv::talk_conv<T>& layer = ls.of(pb.causal);
  const auto shape = shape_of(pb, j.lay);
  const auto win = layer.window();
  const index_t* len = lengths_ptr(j.len);
  outputs out;

  std::vector<T> y(j.x.size());
  std::vector<A> saved(static_cast<size_t>(layer.saved_size(pb.T, pb.B)));
  talkconv::forward_args<T> fa;
  fa.shape = shape, fa.x = j.x.data(), fa.weight = j.W.data(), fa.bias = j.bias.data(), fa.y = y.data();
  fa.saved_offsets = saved.data(), fa.lengths = len, fa.dropout = j.dp;
  layer.forward(fa);
  out.add("layer y", y), out.add("layer saved_offsets", saved);
  for (bool use_saved : {true, false}) {
    std::vector<T> dx(j.x.size()), dW(j.W.size()), db(j.bias.size());
    talkconv::backward_args<T> ba;
    ba.shape = shape, ba.x = j.x.data(), ba.weight = j.W.data(), ba.bias = j.bias.data(), ba.dy = j.dy.data();
    ba.saved_offsets = use_saved ? saved.data() : nullptr, ba.dx = dx.data(), ba.dweight = dW.data(), ba.dbias = db.data();
    ba.lengths = len, ba.dropout = j.dp;
    layer.backward(ba);
    out.add(use_saved ? "layer dx (saved)" : "layer dx (recomputed)", dx);
    out.add(use_saved ? "layer dweight (saved)" : "layer dweight (recomputed)", dW);
    out.add(use_saved ? "layer dbias (saved)" : "layer dbias (recomputed)", db);
  }

  std::vector<A> o(saved.size()), op(saved.size());
  cpu::offsets_forward<T>(shape, win, j.x.data(), j.W.data(), j.bias.data(), j.dp, o.data(), op.data(), len);
  out.add("offsets_forward offsets", o), out.add("offsets_forward offsets_pre", op);
  std::vector<T> odx = j.dy, odW(j.W.size()), odb(j.bias.size());
  cpu::offsets_backward<T>(shape, win, j.x.data(), j.W.data(), op.data(), j.d_o.data(), j.dp, odx.data(), odW.data(),
                           odb.data(), len);
  out.add("offsets_backward dx", odx), out.add("offsets_backward dweight", odW), out.add("offsets_backward dbias", odb);
  std::vector<T> wy(j.x.size()), wdx(j.x.size());
  std::vector<A> wdo(o.size());
  cpu::window_forward<T>(shape, win, j.x.data(), o.data(), wy.data(), len);
  cpu::window_backward<T>(shape, win, j.x.data(), o.data(), j.dy.data(), wdx.data(), wdo.data(), len);
  out.add("window_forward y", wy), out.add("window_backward dx", wdx), out.add("window_backward d_offsets", wdo);
  std::vector<A> S(j.x.size());
  cpu::prefix_sum<T>(shape, j.x.data(), S.data(), A(1) / A(win.window_len()), 256);
  out.add("prefix_sum", S);
  std::vector<A> wide(j.x.size()), hs(static_cast<size_t>(pb.T * pb.B * pb.H));
  for (size_t i = 0; i < wide.size(); ++i) wide[i] = talkconv::to_acc<T>(j.x[i]);
  cpu::head_sum<A>(shape, win, wide.data(), hs.data());
  out.add("head_sum", hs);

  if (pb.causal) {  // incremental decoding: a decoder of this thread's own, made from the shared layer
    cpu::decoder<T> dec = layer.make_decoder(pb.B);
    const index_t steps = std::min<index_t>(pb.T, 40);
    std::vector<T> yd(static_cast<size_t>(steps * pb.B * pb.C));
    for (index_t t = 0; t < steps; ++t)
      dec.step(j.x_tbc.data() + t * pb.B * pb.C, j.W.data(), j.bias.data(), yd.data() + t * pb.B * pb.C);
    out.add("decoder y", yd);
  }
  return out;
}

// The jobs of a run: `per_type` of each storage type, alternately bidirectional and causal.
struct all_jobs {
  layers<float> lf;
  layers<double> ld;
  layers<Eigen::bfloat16> lb;
  std::vector<job<float>> jf;
  std::vector<job<double>> jd;
  std::vector<job<Eigen::bfloat16>> jb;
  std::vector<outputs> expected;  // serial results, in job order
  size_t size() const { return jf.size() + jd.size() + jb.size(); }
  outputs run(size_t k) const {
    if (k < jf.size()) return run_job(lf, jf[k]);
    k -= jf.size();
    if (k < jd.size()) return run_job(ld, jd[k]);
    k -= jd.size();
    return run_job(lb, jb[k]);
  }
  std::string str(size_t k) const {
    if (k < jf.size()) return jf[k].str();
    k -= jf.size();
    if (k < jd.size()) return jd[k].str();
    return jb[k - jd.size()].str();
  }
};

std::unique_ptr<all_jobs> make_jobs(std::uint64_t seed, int per_type) {
  auto a = std::make_unique<all_jobs>();
  for (int i = 0; i < per_type; ++i) {
    a->jf.push_back(make_job<float>(seed + 3 * i, i % 2 == 1));
    a->jd.push_back(make_job<double>(seed + 3 * i + 1, i % 2 == 1));
    a->jb.push_back(make_job<Eigen::bfloat16>(seed + 3 * i + 2, i % 2 == 1));
  }
  for (size_t k = 0; k < a->size(); ++k) a->expected.push_back(a->run(k));  // alone, on this thread
  return a;
}

// A mismatch seen by a worker: reported by the test's own thread (doctest's INFO is per thread).
struct mismatch {
  int thread;
  int round;
  size_t job;
  std::string output;
};

}  // namespace

TEST_SUITE("concurrency") {

TEST_CASE("concurrency: one layer object and the building blocks from 6 std::threads at once, bitwise equal to serial") {
  const auto jobs = make_jobs(4242, draws(6));
  const int threads = 6, rounds = draws(3);
  std::vector<std::vector<mismatch>> seen(static_cast<size_t>(threads));
  std::atomic<long> runs{0};
  std::atomic<int> ready{0};
  std::vector<std::thread> pool;
  for (int id = 0; id < threads; ++id)
    pool.emplace_back([&, id] {
#if TALKCONV_HAS_OPENMP
      omp_set_num_threads(1 + id % 3);  // per-thread OpenMP setting: 1, 2 or 3 threads inside each call
#endif
      ++ready;
      while (ready.load() < threads) std::this_thread::yield();  // start together
      for (int r = 0; r < rounds; ++r)
        for (size_t i = 0; i < jobs->size(); ++i) {
          const size_t k = (i + static_cast<size_t>(id) * 5 + static_cast<size_t>(r)) % jobs->size();  // every thread, every job, in rotated orders
          const std::string d = jobs->run(k).first_difference(jobs->expected[k]);
          if (!d.empty()) seen[static_cast<size_t>(id)].push_back(mismatch{id, r, k, d});
          ++runs;
        }
    });
  for (auto& t : pool) t.join();
  long bad = 0;
  for (const auto& v : seen)
    for (const mismatch& m : v) {
      INFO("thread ", m.thread, " round ", m.round, " job ", m.job, " (", jobs->str(m.job), "): output '", m.output,
           "' differs from the serial run");
      CHECK(m.output.empty());
      ++bad;
    }
  CHECK(runs.load() == static_cast<long>(threads) * rounds * static_cast<long>(jobs->size()));
  MESSAGE(threads, " threads x ", rounds, " rounds x ", jobs->size(), " jobs = ", runs.load(),
          " concurrent job runs (each: layer forward, backward twice, every block, a decoder when causal); ", bad,
          " differ from serial");
}

TEST_CASE("concurrency: calls from inside an OpenMP parallel region run serially and give the same bits") {
  const auto jobs = make_jobs(777, draws(4));
#if TALKCONV_HAS_OPENMP
  const int team = 4;
  std::vector<std::vector<mismatch>> seen(static_cast<size_t>(team));
  std::vector<int> nested(static_cast<size_t>(team), 0);
  long runs = 0;
#pragma omp parallel num_threads(team) reduction(+ : runs)
  {
    const int id = omp_get_thread_num();
    nested[static_cast<size_t>(id)] = omp_in_parallel() ? 1 : 0;
    for (size_t i = 0; i < jobs->size(); ++i) {
      const size_t k = (i + static_cast<size_t>(id) * 3) % jobs->size();
      const std::string d = jobs->run(k).first_difference(jobs->expected[k]);
      if (!d.empty()) seen[static_cast<size_t>(id)].push_back(mismatch{id, 0, k, d});
      ++runs;
    }
  }
  for (int v : nested) CHECK(v == 1);
  for (const auto& v : seen)
    for (const mismatch& m : v) {
      INFO("OpenMP thread ", m.thread, " job ", m.job, " (", jobs->str(m.job), "): output '", m.output, "' differs");
      CHECK(m.output.empty());
    }
  CHECK(runs == team * static_cast<long>(jobs->size()));
  MESSAGE(team, " OpenMP threads x ", jobs->size(), " jobs = ", runs, " job runs from inside a parallel region");
#else
  MESSAGE("talkconv built without OpenMP: calls from std::threads only (the other test case)");
  for (size_t k = 0; k < jobs->size(); ++k) CHECK(jobs->run(k).first_difference(jobs->expected[k]).empty());
#endif
}

}  // TEST_SUITE
