// A sequence too long for one process, sharded along time over the ranks of MPI_COMM_WORLD:
// talkconv::mpi forward and backward of one layer, timed per rank, with the bytes each rank exchanges.
//   mpirun -np 2 talkconv_example_sharded_mpi [T] [C] [iterations]      (default T = 10^7, C = 32)
// The inputs are a function of the global position, so the printed checksums are the same for any
// rank count (up to the rounding of the shard-edge rows).
#include <talkconv/mpi/sharded.hpp>

#include <cstdio>
#include <cstdlib>
#include <vector>

using talkconv::index_t;

namespace {

float hashed(index_t t, index_t c, std::uint64_t salt) {  // a reproducible value in [-1, 1)
  std::uint64_t h = (static_cast<std::uint64_t>(t) * 0x9E3779B97F4A7C15ull) ^
                    (static_cast<std::uint64_t>(c) * 0xC2B2AE3D27D4EB4Full) ^ salt;
  h ^= h >> 31, h *= 0xBF58476D1CE4E5B9ull, h ^= h >> 29;
  return static_cast<float>(h >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

void run(int argc, char** argv) {
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const index_t T = argc > 1 ? std::atoll(argv[1]) : 10000000, C = argc > 2 ? std::atoll(argv[2]) : 32;
  const int iterations = argc > 3 ? std::atoi(argv[3]) : 3;
  const index_t B = 1, H = 4, L = 64, M = 64;

  // [snippet:sharded-mpi]
  const talkconv::talk_conv<float> layer({/*channels*/ C, /*heads*/ H, /*max_left*/ L, /*max_right*/ M});
  const talkconv::dropout_params dropout{/*p*/ 0.1f, /*seed*/ 7, /*training*/ true};
  // Rank r owns tokens [T r / P, T (r + 1) / P); its buffer holds the halo rows around them.
  const talkconv::shard_params shard =
      talkconv::make_shard(layer.window(), dropout, T * rank / ranks, T * (rank + 1) / ranks, T);
  const talkconv::mpi::halo_plan plan(MPI_COMM_WORLD, layer.window(), dropout, shard, B, C, talkconv::layout::tbc,
                                      sizeof(float));
  std::vector<float> x(static_cast<size_t>(shard.rows() * B * C)), dx(x.size());  // own rows + halo
  std::vector<float> y(static_cast<size_t>(shard.own() * B * C)), dy(y.size());   // own rows only
  std::vector<float> saved(static_cast<size_t>(layer.saved_size(shard.own(), B)));
  std::vector<float> weight(static_cast<size_t>(layer.weight_size())), bias(static_cast<size_t>(layer.num_offsets()));
  std::vector<float> dweight(weight.size()), dbias(bias.size());
  // [/snippet:sharded-mpi]
  for (size_t i = 0; i < weight.size(); ++i) weight[i] = 0.2f * hashed(index_t(i), 0, 1);
  for (index_t t = shard.t_begin; t < shard.t_end; ++t)
    for (index_t c = 0; c < C; ++c) {
      x[static_cast<size_t>((t - shard.first_row()) * C + c)] = hashed(t, c, 2);
      dy[static_cast<size_t>((t - shard.t_begin) * C + c)] = hashed(t, c, 3);
    }

  talkconv::forward_args<float> fwd;
  fwd.shape = {shard.own(), B, C, talkconv::layout::tbc};
  fwd.x = x.data(), fwd.weight = weight.data(), fwd.bias = bias.data(), fwd.y = y.data();
  fwd.saved_offsets = saved.data(), fwd.dropout = dropout;
  talkconv::backward_args<float> bwd;
  bwd.shape = fwd.shape, bwd.x = x.data(), bwd.weight = weight.data(), bwd.bias = bias.data(), bwd.dy = dy.data();
  bwd.saved_offsets = saved.data(), bwd.dx = dx.data(), bwd.dweight = dweight.data(), bwd.dbias = dbias.data();
  bwd.dropout = dropout;

  double t_fwd = 1e30, t_bwd = 1e30;  // best of `iterations`
  for (int it = 0; it < iterations; ++it) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    talkconv::mpi::forward(layer, plan, fwd);
    const double t1 = MPI_Wtime();
    talkconv::mpi::backward(layer, plan, bwd, talkconv::mpi::param_grads::allreduce);
    const double t2 = MPI_Wtime();
    t_fwd = std::min(t_fwd, t1 - t0), t_bwd = std::min(t_bwd, t2 - t1);
  }
  double local[2] = {0, 0}, sums[2] = {0, 0};
  for (float v : y) local[0] += v;
  for (index_t i = shard.halo.left * B * C; i < (shard.halo.left + shard.own()) * B * C; ++i) local[1] += dx[size_t(i)];
  MPI_Reduce(local, sums, 2, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
  for (int r = 0; r < ranks; ++r) {
    MPI_Barrier(MPI_COMM_WORLD);
    if (r == rank)
      std::printf(
          "rank %d/%d: tokens [%lld, %lld), halo %lld + %lld rows; forward %.3f s, backward %.3f s; "
          "bytes per layer: forward in %lld out %lld, backward the same reversed\n",
          rank, ranks, (long long)shard.t_begin, (long long)shard.t_end, (long long)shard.halo.left,
          (long long)shard.halo.right, t_fwd, t_bwd, (long long)plan.halo_bytes(), (long long)plan.owned_bytes());
    std::fflush(stdout);
  }
  if (rank == 0)
    std::printf(
        "T = %lld, B = %lld, C = %lld, H = %lld, L = M = %lld, dropout 0.1: sum y = %.6e, sum dx = %.6e, "
        "dW[0] = %.6e\n",
        (long long)T, (long long)B, (long long)C, (long long)H, (long long)L, sums[0], sums[1], double(dweight[0]));
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;  // MPI is called from the main thread only, between the OpenMP regions
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  run(argc, argv);  // the halo plan frees its MPI datatypes before MPI_Finalize
  MPI_Finalize();
  return 0;
}
