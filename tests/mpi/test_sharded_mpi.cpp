// talkconv::mpi under mpirun -np P: every rank computes the whole-sequence call itself (the same
// seeded problem), then its shard through mpi::forward / mpi::backward, and compares its own rows of
// y, saved offsets and dx, and the allreduced dW and dbias, with the whole call's. Bidirectional and
// causal, both layouts, ragged lengths, training dropout, even and random cuts (shards of one token:
// halos over several ranks). Exit status 0 only when every rank passed every check.
#include "../shard_case.hpp"

#include <talkconv/mpi/sharded.hpp>

#include <cstdio>
#include <map>
#include <string>

using namespace shard_case;

namespace {

int rank_ = 0, size_ = 1;
long checks = 0, failures = 0;
std::map<std::string, double> worst;  // max diff / bar per dtype and tensor, over every case

void expect(bool ok, const std::string& what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "rank %d: FAILED %s\n", rank_, what.c_str());
  }
}

template <class T>
const char* name() {
  if constexpr (std::is_same<T, float>::value)
    return "float";
  else if constexpr (std::is_same<T, double>::value)
    return "double";
  else
    return "bfloat16";
}

template <class T>
void compare(const char* tensor, double diff, double scale, const std::string& where) {
  const double b = bar<T>() * std::max(1.0, scale);
  double& w = worst[std::string(name<T>()) + " " + tensor];
  w = std::max(w, diff);
  expect(diff <= b, where + " " + tensor + ": max diff " + std::to_string(diff) + " > bar " + std::to_string(b));
}

template <class T>
void run_case(const problem& pb, int kind) {
  using A = talkconv::acc_t<T>;
  const std::string where = std::string(name<T>()) + " " + pb.str() + (kind == 0 ? " even" : " random");
  const whole<T> w(pb);  // every rank: the same problem and the single-process result
  const auto c = cuts(pb.T, size_, kind, pb.seed + 7);
  const talkconv::talk_conv<T> conv(pb.config());
  const index_t P = conv.num_offsets();
  const talkconv::shard_params s = talkconv::make_shard(conv.window(), pb.dropout(), c[static_cast<size_t>(rank_)],
                                                        c[static_cast<size_t>(rank_) + 1], pb.T);
  const talkconv::mpi::halo_plan plan(MPI_COMM_WORLD, conv.window(), pb.dropout(), s, pb.B, pb.C, pb.lay, sizeof(T));

  // The rank's buffer: own rows from the problem, halo rows poisoned (they must arrive by MPI).
  std::vector<T> x = w.rows_of(w.x, pb.C, s.first_row(), s.first_row() + s.rows());
  for (index_t t = 0; t < s.rows(); ++t)
    if (t < s.halo.left || t >= s.halo.left + s.own())
      for (index_t b = 0; b < pb.B; ++b)
        for (index_t j = 0; j < pb.C; ++j) x[at(pb.lay, s.rows(), pb.B, pb.C, t, b, j)] = talkconv::from_acc<T>(A(1e4));
  const std::vector<T> dy = w.rows_of(w.dy, pb.C, s.t_begin, s.t_end);
  std::vector<T> y(static_cast<size_t>(s.own() * pb.B * pb.C)), dx(x.size()), dW(w.W.size()), db(w.bias.size());
  std::vector<A> saved(static_cast<size_t>(s.own() * pb.B * P));
  talkconv::forward_args<T> fa;
  fa.shape = talkconv::seq_shape{s.own(), pb.B, pb.C, pb.lay};
  fa.x = x.data(), fa.weight = w.W.data(), fa.bias = w.bias.data(), fa.y = y.data(), fa.saved_offsets = saved.data();
  fa.lengths = w.lengths_ptr(), fa.dropout = pb.dropout();
  talkconv::mpi::forward(conv, plan, fa);
  expect(max_diff(x, w.rows_of(w.x, pb.C, s.first_row(), s.first_row() + s.rows())) == 0.0,
         where + " halo rows received");
  compare<T>("y", max_diff(y, w.rows_of(w.y, pb.C, s.t_begin, s.t_end)), max_abs(w.y), where);
  compare<T>("saved", max_diff(saved, w.rows_of(w.saved, P, s.t_begin, s.t_end)), 1.0, where);

  for (bool use_saved : {true, false}) {
    talkconv::backward_args<T> ba;
    ba.shape = fa.shape, ba.x = x.data(), ba.weight = w.W.data(), ba.bias = w.bias.data(), ba.dy = dy.data();
    ba.saved_offsets = use_saved ? saved.data() : nullptr, ba.dx = dx.data(), ba.dweight = dW.data();
    ba.dbias = db.data(), ba.lengths = fa.lengths, ba.dropout = fa.dropout;
    talkconv::mpi::backward(conv, plan, ba, talkconv::mpi::param_grads::allreduce);
    std::vector<T> dx_own(static_cast<size_t>(s.own() * pb.B * pb.C));
    for (index_t t = 0; t < s.own(); ++t)
      for (index_t b = 0; b < pb.B; ++b)
        for (index_t j = 0; j < pb.C; ++j)
          dx_own[at(pb.lay, s.own(), pb.B, pb.C, t, b, j)] =
              dx[at(pb.lay, s.rows(), pb.B, pb.C, t + s.halo.left, b, j)];
    // dx rows and dW, dbias add partials rounded in T: scale 4x the whole values' size covers the
    // partials of these problems (x ~ N(1, 1), W ~ N(0, 1.5 / sqrt(C))).
    compare<T>("dx", max_diff(dx_own, w.rows_of(w.dx, pb.C, s.t_begin, s.t_end)), 4 * max_abs(w.dx), where);
    compare<T>("dW", max_diff(dW, w.dW), 4 * max_abs(w.dW), where);
    compare<T>("dbias", max_diff(db, w.db), 4 * max_abs(w.db), where);
  }
  // Bytes: this rank receives exactly its halo rows (fewer only at the sequence ends).
  expect(plan.halo_bytes() == (s.halo.left + s.halo.right) * pb.B * pb.C * index_t(sizeof(T)), where + " halo bytes");
}

template <class T>
void run_all(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  int n = 0;
  for (bool causal : {false, true})
    for (layout lay : {layout::tbc, layout::btc})
      for (int mode = 0; mode < 3; ++mode)
        for (int kind = 0; kind < 2; ++kind) {
          problem pb;
          pb.seed = seed * 1000 + static_cast<std::uint64_t>(n++);
          pb.causal = causal, pb.lay = lay;
          pb.T = std::uniform_int_distribution<index_t>(size_, 300)(rng);  // P does not divide T, mostly
          pb.B = std::uniform_int_distribution<index_t>(1, 3)(rng);
          pb.H = std::uniform_int_distribution<index_t>(1, 2)(rng);
          pb.C = pb.H * std::uniform_int_distribution<index_t>(1, 5)(rng);
          pb.L = std::uniform_int_distribution<index_t>(0, 60)(rng);
          pb.M = causal ? 0 : std::uniform_int_distribution<index_t>(0, 60)(rng);
          pb.ragged = mode != 0;
          pb.training = mode == 2, pb.p = mode == 2 ? 0.3f : 0.0f;
          run_case<T>(pb, kind);
        }
  // Shards shorter than the halo: T = 2P tokens, L = M = 40 (every halo spans every other rank).
  for (bool causal : {false, true}) {
    problem pb;
    pb.seed = seed + 5, pb.causal = causal, pb.T = 2 * size_, pb.B = 2, pb.C = 4, pb.H = 2, pb.L = 40,
    pb.M = causal ? 0 : 40, pb.training = true, pb.p = 0.5f, pb.ragged = true;
    run_case<T>(pb, 0);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  try {
    run_all<float>(11);
    run_all<double>(12);
    run_all<Eigen::bfloat16>(13);
    // A partition that does not tile [0, T) fails with a named error on every rank.
    bool threw = false;
    try {
      const talkconv::talk_conv<float> conv(problem{}.config());
      const talkconv::shard_params s = talkconv::make_shard(conv.window(), {}, rank_ * 10, rank_ * 10 + 5, size_ * 10);
      talkconv::mpi::halo_plan plan(MPI_COMM_WORLD, conv.window(), {}, s, 1, 4, layout::tbc, sizeof(float));
    } catch (const talkconv::error& e) {
      threw = std::string(e.what()).find("tile [0, T)") != std::string::npos;
    }
    expect(threw, "a gap between shards is refused");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: exception %s\n", rank_, e.what());
    ++failures;
  }
  long totals[2] = {checks, failures}, sums[2] = {0, 0};
  MPI_Reduce(totals, sums, 2, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
  if (rank_ == 0) {
    for (const auto& [k, v] : worst) std::printf("max diff sharded vs whole (rank 0): %-16s %.3g\n", k.c_str(), v);
    std::printf("talkconv mpi test, %d ranks: %ld checks, %ld failed\n", size_, sums[0], sums[1]);
  }
  const long failed = rank_ == 0 ? sums[1] : 0;
  long any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
  MPI_Finalize();
  return any == 0 ? 0 : 1;
}
