// Time shards on the device (float): k shards of one sequence batch through cuda::talk_conv's shard
// calls on one GPU, reassembled (halo dx rows added to their owners), equal the whole CUDA call; and
// talkconv::nccl with one rank (the only count one GPU allows) equals it bit for bit. Every case is
// skipped without a GPU (the program then exits 77: ctest's Skipped).
#include "gpu_util.cuh"

#include <talkconv/nccl/sharded.cuh>

namespace {

struct sproblem {
  index_t T, B, C, H, L, M;
  bool causal;
  talkconv::layout lay;
  bool ragged, training;
};

struct host_case {
  sproblem pb;
  std::vector<float> x, W, bias, dy;
  std::vector<index_t> lengths;
  talkconv::talk_config cfg() const {
    talkconv::talk_config c;
    c.channels = pb.C, c.heads = pb.H, c.max_left = pb.L, c.max_right = pb.causal ? 0 : pb.M, c.causal = pb.causal;
    return c;
  }
  talkconv::dropout_params dropout() const { return talkconv::dropout_params{0.3f, 99, pb.training}; }
  index_t P() const { return pb.causal ? pb.H : 2 * pb.H; }
  size_t at(index_t rows, index_t width, index_t t, index_t b, index_t j) const {
    const talkconv::seq_strides s = talkconv::strides_of(pb.lay, rows, pb.B, width);
    return size_t(t * s.t + b * s.b + j);
  }
  template <class X>
  std::vector<X> rows_of(const std::vector<X>& v, index_t width, index_t g0, index_t g1) const {
    std::vector<X> out(size_t((g1 - g0) * pb.B * width));
    for (index_t t = g0; t < g1; ++t)
      for (index_t b = 0; b < pb.B; ++b)
        for (index_t j = 0; j < width; ++j) out[at(g1 - g0, width, t - g0, b, j)] = v[at(pb.T, width, t, b, j)];
    return out;
  }
};

host_case make_case(const sproblem& pb, std::uint64_t seed) {
  host_case h;
  h.pb = pb;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const index_t P = pb.causal ? pb.H : 2 * pb.H;
  for (index_t i = 0; i < pb.T * pb.B * pb.C; ++i) h.x.push_back(1.0f + nd(rng)), h.dy.push_back(nd(rng));
  for (index_t i = 0; i < P * pb.C; ++i) h.W.push_back(nd(rng) * 1.5f / std::sqrt(float(pb.C)));
  for (index_t i = 0; i < P; ++i) h.bias.push_back(0.5f + nd(rng));
  if (pb.ragged)
    for (index_t b = 0; b < pb.B; ++b) h.lengths.push_back(b == 0 ? pb.T : index_t(rng() % (pb.T + 1)));
  return h;
}

struct results {
  std::vector<float> y, dx, dW, db, saved;
};

// The whole call (shard == nullptr) or one shard's call, on the device.
results run_device(const host_case& h, const talkconv::shard_params* s) {
  const sproblem& pb = h.pb;
  const tcu::talk_conv<float> conv(h.cfg());
  const index_t rows = s ? s->rows() : pb.T, own = s ? s->own() : pb.T, first = s ? s->first_row() : 0;
  dbuf<float> x(h.rows_of(h.x, pb.C, first, first + rows)),
      dy(h.rows_of(h.dy, pb.C, first + (s ? s->halo.left : 0), first + (s ? s->halo.left : 0) + own));
  dbuf<float> W(h.W), bias(h.bias), y(size_t(own * pb.B * pb.C)), dx(size_t(rows * pb.B * pb.C)), dW(h.W.size()),
      db(h.bias.size()), saved(size_t(own * pb.B * h.P()));
  dbuf<index_t> len(h.lengths);
  cudaStream_t st = nullptr;
  CUDA_OK(cudaStreamCreate(&st));
  talkconv::forward_args<float> fa;
  fa.shape = talkconv::seq_shape{own, pb.B, pb.C, pb.lay};
  fa.x = x.p, fa.weight = W.p, fa.bias = bias.p, fa.y = y.p, fa.saved_offsets = saved.p;
  fa.lengths = h.lengths.empty() ? nullptr : len.p, fa.dropout = h.dropout();
  talkconv::backward_args<float> ba;
  ba.shape = fa.shape, ba.x = x.p, ba.weight = W.p, ba.bias = bias.p, ba.dy = dy.p, ba.saved_offsets = saved.p;
  ba.dx = dx.p, ba.dweight = dW.p, ba.dbias = db.p, ba.lengths = fa.lengths, ba.dropout = fa.dropout;
  if (s) {
    conv.forward(fa, *s, st);
    conv.backward(ba, *s, st);
  } else {
    conv.forward(fa, st);
    conv.backward(ba, st);
  }
  CUDA_OK(cudaStreamSynchronize(st));
  CUDA_OK(cudaStreamDestroy(st));
  return results{y.download(), dx.download(), dW.download(), db.download(), saved.download()};
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}
double max_abs(const std::vector<float>& a) {
  double m = 0;
  for (float v : a) m = std::max(m, std::fabs(double(v)));
  return m;
}

void check_shards(const sproblem& pb, const std::vector<index_t>& bounds) {
  INFO("T=", pb.T, " B=", pb.B, " C=", pb.C, " H=", pb.H, " L=", pb.L, " M=", pb.M, " causal=", pb.causal,
       " btc=", pb.lay == talkconv::layout::btc, " ragged=", pb.ragged, " training=", pb.training);
  const host_case h = make_case(pb, 1234 + std::uint64_t(pb.T));
  const results whole = run_device(h, nullptr);
  const tcu::talk_conv<float> conv(h.cfg());
  results all{std::vector<float>(whole.y.size()), std::vector<float>(whole.dx.size()),
              std::vector<float>(whole.dW.size(), 0.0f), std::vector<float>(whole.db.size(), 0.0f),
              std::vector<float>(whole.saved.size())};
  std::vector<std::pair<talkconv::shard_params, std::vector<float>>> halos;
  double partial = 0;
  for (size_t r = 0; r + 1 < bounds.size(); ++r) {
    const talkconv::shard_params s = talkconv::make_shard(conv.window(), h.dropout(), bounds[r], bounds[r + 1], pb.T);
    const results part = run_device(h, &s);
    for (index_t t = s.t_begin; t < s.t_end; ++t)
      for (index_t b = 0; b < pb.B; ++b) {
        for (index_t j = 0; j < pb.C; ++j) {
          all.y[h.at(pb.T, pb.C, t, b, j)] = part.y[h.at(s.own(), pb.C, t - s.t_begin, b, j)];
          all.dx[h.at(pb.T, pb.C, t, b, j)] = part.dx[h.at(s.rows(), pb.C, t - s.first_row(), b, j)];
        }
        for (index_t j = 0; j < h.P(); ++j)
          all.saved[h.at(pb.T, h.P(), t, b, j)] = part.saved[h.at(s.own(), h.P(), t - s.t_begin, b, j)];
      }
    for (size_t i = 0; i < all.dW.size(); ++i) all.dW[i] += part.dW[i];
    for (size_t i = 0; i < all.db.size(); ++i) all.db[i] += part.db[i];
    partial = std::max({partial, max_abs(part.dx), max_abs(part.dW), max_abs(part.db)});
    halos.emplace_back(s, part.dx);
  }
  for (const auto& [s, dx] : halos)
    for (index_t g = s.first_row(); g < s.first_row() + s.rows(); ++g)
      if (g < s.t_begin || g >= s.t_end)
        for (index_t b = 0; b < pb.B; ++b)
          for (index_t j = 0; j < pb.C; ++j)
            all.dx[h.at(pb.T, pb.C, g, b, j)] += dx[h.at(s.rows(), pb.C, g - s.first_row(), b, j)];
  const double bar = tol<float>::value;
  CHECK(max_diff(all.y, whole.y) <= bar * std::max(1.0, max_abs(whole.y)));
  CHECK(max_diff(all.saved, whole.saved) <= bar);
  CHECK(max_diff(all.dx, whole.dx) <= bar * std::max({1.0, max_abs(whole.dx), partial}));
  CHECK(max_diff(all.dW, whole.dW) <= bar * std::max({1.0, max_abs(whole.dW), partial}));
  CHECK(max_diff(all.db, whole.db) <= bar * std::max({1.0, max_abs(whole.db), partial}));
}

}  // namespace

TEST_SUITE("cuda_shard") {
  TEST_CASE("cuda shard: k shards on one device equal the whole CUDA call" * doctest::skip(!has_gpu())) {
    for (bool causal : {false, true})
      for (auto lay : {talkconv::layout::tbc, talkconv::layout::btc})
        for (bool training : {false, true}) {
          const sproblem pb{517, 3, 16, 2, 40, 23, causal, lay, true, training};
          check_shards(pb, {0, 100, 101, 130, 400, 517});  // shards of 1 and 29 tokens: multi-shard halos
          check_shards(pb, {0, 258, 517});
        }
  }

  TEST_CASE("nccl: one rank equals the whole CUDA call bit for bit" * doctest::skip(!has_gpu())) {
    const sproblem pb{300, 2, 16, 2, 20, 20, false, talkconv::layout::tbc, true, true};
    const host_case h = make_case(pb, 77);
    const results whole = run_device(h, nullptr);
    ncclComm_t comm;
    int dev = 0;
    CUDA_OK(cudaGetDevice(&dev));
    REQUIRE(ncclCommInitAll(&comm, 1, &dev) == ncclSuccess);
    const tcu::talk_conv<float> conv(h.cfg());
    const talkconv::nccl::halo_plan plan(conv.window(), h.dropout(), {0, pb.T}, 0, pb.B, pb.C, pb.lay, sizeof(float));
    CHECK(plan.halo_bytes() == 0);
    dbuf<float> x(h.x), dy(h.dy), W(h.W), bias(h.bias), y(h.x.size()), dx(h.x.size()), dW(h.W.size()),
        db(h.bias.size()), saved(size_t(pb.T * pb.B * h.P()));
    dbuf<index_t> len(h.lengths);
    cudaStream_t st = nullptr;
    CUDA_OK(cudaStreamCreate(&st));
    talkconv::forward_args<float> fa;
    fa.shape = talkconv::seq_shape{pb.T, pb.B, pb.C, pb.lay};
    fa.x = x.p, fa.weight = W.p, fa.bias = bias.p, fa.y = y.p, fa.saved_offsets = saved.p, fa.lengths = len.p;
    fa.dropout = h.dropout();
    std::size_t bytes = 0;
    talkconv::nccl::forward(conv, plan, comm, nullptr, bytes, fa, st);
    dbuf<char> ws(bytes);
    talkconv::nccl::forward(conv, plan, comm, ws.p, bytes, fa, st);
    talkconv::backward_args<float> ba;
    ba.shape = fa.shape, ba.x = x.p, ba.weight = W.p, ba.bias = bias.p, ba.dy = dy.p, ba.saved_offsets = saved.p;
    ba.dx = dx.p, ba.dweight = dW.p, ba.dbias = db.p, ba.lengths = len.p, ba.dropout = fa.dropout;
    std::size_t bbytes = 0;
    talkconv::nccl::backward(conv, plan, comm, nullptr, bbytes, ba, st, talkconv::nccl::param_grads::allreduce);
    dbuf<char> bws(bbytes);
    talkconv::nccl::backward(conv, plan, comm, bws.p, bbytes, ba, st, talkconv::nccl::param_grads::allreduce);
    CUDA_OK(cudaStreamSynchronize(st));
    CHECK(max_diff(y.download(), whole.y) == 0.0);
    CHECK(max_diff(saved.download(), whole.saved) == 0.0);
    CHECK(max_diff(dx.download(), whole.dx) == 0.0);
    CHECK(max_diff(dW.download(), whole.dW) == 0.0);
    CHECK(max_diff(db.download(), whole.db) == 0.0);
    CUDA_OK(cudaStreamDestroy(st));
    ncclCommDestroy(comm);
  }
}
