"""talkconv_torch against a pure-PyTorch float64 reference of SPEC (reference.py): the function, its
gradients (gradcheck and the reference's autograd), the module, incremental decoding, checkpoints with
the original's parameter names, named errors; CUDA cases skip without a GPU."""
import io

import pytest
import torch

import talkconv_torch as tt
from talkconv_torch import Status, TalkConvError, TaLKConv

import reference as ref

torch.set_num_threads(2)

CASES = [  # T, B, C, H, L, M, causal
    (13, 3, 8, 2, 4, 3, False),
    (9, 2, 12, 3, 0, 5, False),
    (17, 2, 8, 1, 6, 0, True),
    (5, 4, 16, 4, 9, 9, False),  # windows longer than the sequence
    (11, 1, 6, 3, 3, 0, True),
]


def make(T, B, C, H, causal, dtype=torch.float64, device="cpu", seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    P = H if causal else 2 * H
    x = torch.randn(T, B, C, generator=g, dtype=torch.float64)
    w = scale * torch.randn(P, C, generator=g, dtype=torch.float64)
    b = torch.randn(P, generator=g, dtype=torch.float64)
    return [t.to(dtype=dtype, device=device) for t in (x, w, b)]


def cuda_ok():
    return torch.cuda.is_available() and tt.has_cuda()


needs_cuda = pytest.mark.skipif(not cuda_ok(), reason="no CUDA device, or talkconv_torch built without CUDA")


# ---- forward and gradients against the reference --------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_reference(case):
    T, B, C, H, L, M, causal = case
    x, w, b = make(T, B, C, H, causal)
    y = tt.talk_conv(x, w, b, H, L, M, causal=causal)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, ref.talk_conv(x, w, b, H, L, M, causal), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_gradients_match_reference_autograd(case):
    T, B, C, H, L, M, causal = case
    x, w, b = make(T, B, C, H, causal, seed=1)
    dy = torch.randn(T, B, C, dtype=torch.float64)
    grads = []
    for fn in (tt.talk_conv, ref.talk_conv):
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        fn(xs, ws, bs, H, L, M, causal=causal).backward(dy)
        grads.append((xs.grad, ws.grad, bs.grad))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_lengths_match_reference_and_zero_padding():
    T, B, C, H, L, M = 10, 3, 8, 2, 4, 4
    x, w, b = make(T, B, C, H, False, seed=2)
    n = [10, 6, 0]
    y = tt.talk_conv(x, w, b, H, L, M, lengths=n)
    torch.testing.assert_close(y, ref.talk_conv(x, w, b, H, L, M, lengths=n), rtol=1e-12, atol=1e-12)
    assert y[6:, 1].abs().max() == 0 and y[:, 2].abs().max() == 0
    # lengths as a tensor gives the same
    torch.testing.assert_close(tt.talk_conv(x, w, b, H, L, M, lengths=torch.tensor(n)), y, rtol=0, atol=0)


def test_bias_none():
    x, w, _ = make(8, 2, 8, 2, False, seed=3)
    y = tt.talk_conv(x, w, None, 2, 3, 3)
    torch.testing.assert_close(y, ref.talk_conv(x, w, None, 2, 3, 3), rtol=1e-12, atol=1e-12)
    xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, c: tt.talk_conv(a, c, None, 2, 3, 3), (xs, ws))


# ---- gradcheck (float64, small shapes) -------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw",
    [
        dict(H=2, L=3, M=2, causal=False),
        dict(H=2, L=4, M=0, causal=True),
        dict(H=1, L=3, M=3, causal=False, lengths=[7, 4]),
        dict(H=2, L=3, M=2, causal=False, dropout_p=0.3, training=True, seed=1234),
        dict(H=2, L=5, M=0, causal=True, dropout_p=0.5, training=True, seed=99, lengths=[5, 7]),
        dict(H=2, L=3, M=2, causal=False, batch_first=True),
    ],
    ids=["bidirectional", "causal", "lengths", "dropout", "causal-dropout-lengths", "batch_first"],
)
def test_gradcheck(kw):
    kw = dict(kw)
    H, L, M, causal = kw.pop("H"), kw.pop("L"), kw.pop("M"), kw.pop("causal")
    x, w, b = make(7, 2, 4, H, causal, seed=4)
    if kw.get("batch_first"):
        x = x.transpose(0, 1).contiguous()
    args = tuple(t.clone().requires_grad_() for t in (x, w, b))
    assert torch.autograd.gradcheck(lambda a, c, d: tt.talk_conv(a, c, d, H, L, M, causal=causal, **kw), args,
                                    eps=1e-6, atol=1e-7)


# ---- dropout -------------------------------------------------------------------------------------------
def test_dropout_is_a_function_of_the_seed():
    x, w, b = make(12, 2, 8, 2, False, seed=5)
    args = (x, w, b, 2, 4, 4)
    y1 = tt.talk_conv(*args, dropout_p=0.4, training=True, seed=7)
    y2 = tt.talk_conv(*args, dropout_p=0.4, training=True, seed=7)
    y3 = tt.talk_conv(*args, dropout_p=0.4, training=True, seed=8)
    y0 = tt.talk_conv(*args)
    assert torch.equal(y1, y2) and not torch.equal(y1, y3) and not torch.equal(y1, y0)
    torch.testing.assert_close(tt.talk_conv(*args, dropout_p=0.4, training=False, seed=7), y0, rtol=0, atol=0)
    # seed=None draws from torch's generator: reproducible under torch.manual_seed
    torch.manual_seed(3)
    a = tt.talk_conv(*args, dropout_p=0.4, training=True)
    torch.manual_seed(3)
    assert torch.equal(a, tt.talk_conv(*args, dropout_p=0.4, training=True))


def test_dropout_is_the_reference_with_some_mask():
    # Every offset is either dropped (0) or scaled by 1 / (1 - p): recover the mask from the saved-offset-free
    # path (one head, one offset per token) and check the whole output against the reference with it.
    T, B, C, H, L, p = 16, 2, 4, 1, 5, 0.5
    x, w, b = make(T, B, C, H, True, seed=6)
    y = tt.talk_conv(x, w, b, H, L, 0, causal=True, dropout_p=p, training=True, seed=11)
    best = None
    o = ref.offsets(x, w, b)
    # per token, the mask is the value in {0, 1} whose window reproduces y[t]
    mask = torch.zeros(T, B, 1, dtype=torch.float64)
    for t in range(T):
        for bb in range(B):
            errs = []
            for m in (0.0, 1.0):
                mk = mask.clone()
                mk[t, bb, 0] = m
                yr = ref.window(x, o * mk / (1 - p), H, L, 0, True)
                errs.append((yr[t, bb] - y[t, bb]).abs().max().item())
            mask[t, bb, 0] = 0.0 if errs[0] < errs[1] else 1.0
            best = min(errs)
            assert best < 1e-12
    assert 0 < mask.sum() < T * B  # some dropped, some kept
    torch.testing.assert_close(y, ref.window(x, o * mask / (1 - p), H, L, 0, True), rtol=1e-12, atol=1e-12)


# ---- layouts and dtypes -------------------------------------------------------------------------------------
def test_layouts_agree():
    T, B, C, H, L, M = 9, 3, 8, 2, 3, 2
    x, w, b = make(T, B, C, H, False, seed=7)
    y = tt.talk_conv(x, w, b, H, L, M)
    xb = x.transpose(0, 1).contiguous()  # [B, T, C]
    torch.testing.assert_close(tt.talk_conv(xb, w, b, H, L, M, batch_first=True), y.transpose(0, 1), rtol=0, atol=0)
    # a [T, B, C] view of batch-major memory is used as it is (btc), and agrees
    yv = tt.talk_conv(xb.transpose(0, 1), w, b, H, L, M)
    torch.testing.assert_close(yv, y, rtol=0, atol=0)
    # a non-contiguous input (a slice) is copied and agrees
    big = torch.cat([x, x], 2)[:, :, :C]
    torch.testing.assert_close(tt.talk_conv(big, w, b, H, L, M), y, rtol=0, atol=0)
    # gradients through the btc path
    xs = xb.clone().requires_grad_()
    tt.talk_conv(xs, w, b, H, L, M, batch_first=True).sum().backward()
    xr = x.clone().requires_grad_()
    tt.talk_conv(xr, w, b, H, L, M).sum().backward()
    torch.testing.assert_close(xs.grad, xr.grad.transpose(0, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
def test_dtypes(dtype, tol):
    T, B, C, H, L, M = 20, 2, 16, 4, 5, 5
    x, w, b = make(T, B, C, H, False, seed=8, scale=0.3)
    want = ref.talk_conv(x, w, b, H, L, M)
    xd, wd, bd = (t.to(dtype).requires_grad_() for t in (x, w, b))
    y = tt.talk_conv(xd, wd, bd, H, L, M)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), want, rtol=tol, atol=tol)
    y.float().sum().backward()
    assert xd.grad.dtype == dtype and wd.grad.dtype == dtype and bd.grad.dtype == dtype
    xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
    ref.talk_conv(xr, wr, br, H, L, M).sum().backward()
    torch.testing.assert_close(xd.grad.double(), xr.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(bd.grad.double(), br.grad, rtol=10 * tol, atol=10 * tol)


def test_saved_offsets_and_recompute_agree():
    # inference (no grad) saves nothing; training keeps the forward's offsets for the backward
    x, w, b = make(10, 2, 8, 2, False, seed=9)
    with torch.no_grad():
        y0 = tt.talk_conv(x, w, b, 2, 3, 3)
    xs = x.clone().requires_grad_()
    y1 = tt.talk_conv(xs, w, b, 2, 3, 3)
    assert torch.equal(y0, y1.detach()) and y1.grad_fn is not None


# ---- the module ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("decode", [False, True])
def test_module_matches_reference_and_loads_original_state_dict(decode):
    C, H, L, M = 16, 4, 5, (0 if decode else 3)
    torch.manual_seed(10)
    original = ref.OriginalTaLKConv(C, offsets_dropout=0.1, decode=decode, num_heads=H, min_len_left=L,
                                    min_len_right=M).double().eval()
    buf = io.BytesIO()
    torch.save(original.state_dict(), buf)  # a checkpoint with the original's parameter names
    buf.seek(0)
    state = torch.load(buf)
    assert sorted(state) == ["offsets.bias", "offsets.weight"]
    mod = TaLKConv(C, offsets_dropout=0.1, decode=decode, num_heads=H, min_len_left=L, min_len_right=M).double()
    assert sorted(mod.state_dict()) == sorted(state)
    mod.load_state_dict(state)  # strict: same names, same shapes
    mod.eval()
    x = torch.randn(14, 3, C, dtype=torch.float64)
    torch.testing.assert_close(mod(x), original(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mod(x), ref.talk_conv(x, mod.offsets.weight, mod.offsets.bias, H, L, M, decode),
                               rtol=1e-12, atol=1e-12)


def test_module_trains_and_dropout_follows_train_mode():
    torch.manual_seed(11)
    mod = TaLKConv(8, offsets_dropout=0.5, num_heads=2, min_len_left=3, min_len_right=3).double()
    x = torch.randn(10, 2, 8, dtype=torch.float64, requires_grad=True)
    mod.train()
    y = mod(x)
    y.pow(2).sum().backward()
    assert mod.offsets.weight.grad is not None and mod.offsets.bias.grad is not None and x.grad is not None
    mod.eval()
    torch.testing.assert_close(mod(x), ref.talk_conv(x, mod.offsets.weight, mod.offsets.bias, 2, 3, 3),
                               rtol=1e-12, atol=1e-12)


def test_module_mask_zeroes_padding_and_batch_first():
    torch.manual_seed(12)
    mod = TaLKConv(8, num_heads=2, min_len_left=3, min_len_right=2).double().eval()
    x = torch.randn(9, 2, 8, dtype=torch.float64)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[1, 6:] = True  # sequence 1 is padded after 6 tokens
    xz = x.clone()
    xz[6:, 1] = 0
    torch.testing.assert_close(mod(x, mask=mask), mod(xz), rtol=0, atol=0)
    bf = TaLKConv(8, num_heads=2, min_len_left=3, min_len_right=2, batch_first=True).double().eval()
    bf.load_state_dict(mod.state_dict())
    torch.testing.assert_close(bf(x.transpose(0, 1), mask=mask), mod(xz).transpose(0, 1), rtol=1e-12, atol=1e-12)


def test_original_normalization_flag():
    # decode=True with the constructor's default min_len_right=1: the original divides by L + 2, SPEC by L + 1
    torch.manual_seed(13)
    spec = TaLKConv(8, decode=True, num_heads=2, min_len_left=4).double().eval()
    orig = TaLKConv(8, decode=True, num_heads=2, min_len_left=4, original_normalization=True).double().eval()
    orig.load_state_dict(spec.state_dict())
    original = ref.OriginalTaLKConv(8, decode=True, num_heads=2, min_len_left=4).double().eval()
    original.load_state_dict(spec.state_dict())
    x = torch.randn(7, 2, 8, dtype=torch.float64)
    torch.testing.assert_close(orig(x), original(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(spec(x), original(x) * 6 / 5, rtol=1e-12, atol=1e-12)


# ---- incremental decoding --------------------------------------------------------------------------------------
def decode_all(mod, x, state, chunk=1):
    return torch.cat([mod(x[t:t + chunk], incremental_state=state) for t in range(0, x.shape[0], chunk)])


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_incremental_decoding_equals_full_causal_forward(dtype, tol):
    torch.manual_seed(14)
    mod = TaLKConv(12, decode=True, num_heads=3, min_len_left=4, min_len_right=0).to(dtype).eval()
    x = torch.randn(23, 3, 12, dtype=dtype)  # longer than L + 2: the decoder's ring turns over
    full = mod(x)
    state = {}
    torch.testing.assert_close(decode_all(mod, x, state), full, rtol=tol, atol=tol)
    torch.testing.assert_close(decode_all(mod, x, {}, chunk=5), full, rtol=tol, atol=tol)
    assert len(state) == 1  # one entry per module, fairseq style


def test_two_modules_share_one_incremental_state():
    torch.manual_seed(15)
    a = TaLKConv(8, decode=True, num_heads=2, min_len_left=3, min_len_right=0).double().eval()
    b = TaLKConv(8, decode=True, num_heads=2, min_len_left=6, min_len_right=0).double().eval()
    x = torch.randn(10, 2, 8, dtype=torch.float64)
    state = {}
    ys = [b(a(x[t:t + 1], incremental_state=state), incremental_state=state) for t in range(10)]
    torch.testing.assert_close(torch.cat(ys), b(a(x)), rtol=1e-12, atol=1e-12)
    assert len(state) == 2


def test_reorder_incremental_state_for_beam_search():
    torch.manual_seed(16)
    mod = TaLKConv(8, decode=True, num_heads=2, min_len_left=3, min_len_right=0).double().eval()
    B, t0, t1 = 4, 9, 6
    hist = torch.randn(t0, B, 8, dtype=torch.float64)
    state = {}
    decode_all(mod, hist, state)
    order = torch.tensor([2, 0, 2, 3])
    mod.reorder_incremental_state(state, order)
    cont = torch.randn(t1, B, 8, dtype=torch.float64)
    got = decode_all(mod, cont, state)
    want = mod(torch.cat([hist[:, order], cont]))[t0:]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # sentences finish: the batch shrinks to 2 (fairseq passes a shorter new_order)
    order2 = torch.tensor([3, 1])
    mod.reorder_incremental_state(state, order2)
    cont2 = torch.randn(5, 2, 8, dtype=torch.float64)
    got2 = decode_all(mod, cont2, state)
    seqs = torch.cat([hist[:, order], cont])[:, order2]
    want2 = mod(torch.cat([seqs, cont2]))[t0 + t1:]
    torch.testing.assert_close(got2, want2, rtol=1e-12, atol=1e-12)


# ---- named errors -------------------------------------------------------------------------------------------------
def check_error(code, argument, fn):
    with pytest.raises(TalkConvError) as e:
        fn()
    assert e.value.code == code and e.value.argument == argument, (e.value.code, e.value.argument, str(e.value))
    assert isinstance(e.value, ValueError) and str(e.value).startswith("talkconv: " + code.name)
    return e.value


def test_bad_input_raises_with_the_arguments_name():
    x, w, b = make(8, 2, 8, 2, False)
    check_error(Status.invalid_shape, "C", lambda: tt.talk_conv(x, w, b, 3, 2, 2))
    check_error(Status.invalid_shape, "H", lambda: tt.talk_conv(x, w, b, 0, 2, 2))
    check_error(Status.invalid_window, "max_left", lambda: tt.talk_conv(x, w, b, 2, -1, 2))
    check_error(Status.invalid_window, "max_right", lambda: tt.talk_conv(x, w, b, 2, 2, -3))
    check_error(Status.invalid_window, "max_right", lambda: tt.talk_conv(x, w[:2], b[:2], 2, 2, 2, causal=True))
    check_error(Status.invalid_length, "lengths[1]", lambda: tt.talk_conv(x, w, b, 2, 2, 2, lengths=[8, 9]))
    check_error(Status.invalid_length, "lengths[0]", lambda: tt.talk_conv(x, w, b, 2, 2, 2, lengths=[-1, 3]))
    check_error(Status.invalid_shape, "lengths", lambda: tt.talk_conv(x, w, b, 2, 2, 2, lengths=[3]))
    check_error(Status.invalid_dropout, "dropout",
                lambda: tt.talk_conv(x, w, b, 2, 2, 2, dropout_p=1.0, training=True, seed=1))
    check_error(Status.invalid_shape, "weight", lambda: tt.talk_conv(x, w[:3], b, 2, 2, 2))
    check_error(Status.invalid_shape, "bias", lambda: tt.talk_conv(x, w, b[:3], 2, 2, 2))
    check_error(Status.invalid_shape, "x", lambda: tt.talk_conv(x[0], w, b, 2, 2, 2))
    e = check_error(Status.invalid_shape, "C", lambda: TaLKConv(10, num_heads=3)(torch.randn(4, 1, 10)))
    assert "C = 10 is not divisible by H = 3" in str(e)
    with pytest.raises(TypeError, match="weight"):
        tt.talk_conv(x, w.float(), b, 2, 2, 2)
    with pytest.raises(TypeError, match="x must be"):
        tt.talk_conv(x.int(), w, b, 2, 2, 2)
    enc = TaLKConv(8, num_heads=2).double()
    check_error(Status.invalid_window, "causal", lambda: enc(x[:1], incremental_state={}))


def test_error_pickles():
    import pickle

    e = pickle.loads(pickle.dumps(TalkConvError("talkconv: invalid_shape: C", 1, "C")))
    assert e.code == Status.invalid_shape and e.argument == "C" and e.status_name == "invalid_shape"


# ---- CUDA (skipped without a GPU) ----------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("case", CASES)
def test_cuda_matches_cpu_and_reference(case):
    T, B, C, H, L, M, causal = case
    x, w, b = make(T, B, C, H, causal, seed=20)
    dy = torch.randn(T, B, C, dtype=torch.float64)
    outs = []
    for dev in ("cpu", "cuda"):
        xs, ws, bs = (t.to(dev).requires_grad_() for t in (x, w, b))
        y = tt.talk_conv(xs, ws, bs, H, L, M, causal=causal, lengths=[T] + [max(T - 3, 0)] * (B - 1))
        y.backward(dy.to(dev))
        outs.append([t.detach().cpu() for t in (y, xs.grad, ws.grad, bs.grad)])
    for got, want in zip(outs[1], outs[0]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    n = [T] + [max(T - 3, 0)] * (B - 1)
    torch.testing.assert_close(outs[1][0], ref.talk_conv(x, w, b, H, L, M, causal, lengths=n), rtol=1e-10, atol=1e-10)


@needs_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
def test_cuda_dtypes_and_device_lengths(dtype, tol):
    T, B, C, H, L, M = 40, 3, 32, 4, 7, 5
    x, w, b = make(T, B, C, H, False, seed=21, scale=0.3)
    n = torch.tensor([40, 17, 1])
    want = ref.talk_conv(x, w, b, H, L, M, lengths=n)
    xd, wd, bd = (t.to("cuda", dtype).requires_grad_() for t in (x, w, b))
    y = tt.talk_conv(xd, wd, bd, H, L, M, lengths=n.cuda())
    torch.testing.assert_close(y.double().cpu(), want, rtol=tol, atol=tol)
    y.float().sum().backward()
    assert xd.grad.dtype == dtype and torch.isfinite(wd.grad.float()).all()


@needs_cuda
def test_cuda_gradcheck_and_dropout_mask_equals_cpu():
    x, w, b = make(7, 2, 4, 2, False, seed=22)
    kw = dict(dropout_p=0.3, training=True, seed=77)
    args = tuple(t.cuda().requires_grad_() for t in (x, w, b))
    assert torch.autograd.gradcheck(lambda a, c, d: tt.talk_conv(a, c, d, 2, 3, 2, **kw), args, eps=1e-6, atol=1e-7)
    y_cpu = tt.talk_conv(x, w, b, 2, 3, 2, **kw)
    y_gpu = tt.talk_conv(*(t.cuda() for t in (x, w, b)), 2, 3, 2, **kw)
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-12, atol=1e-12)


@needs_cuda
def test_cuda_runs_on_the_current_stream_and_is_deterministic():
    x, w, b = make(300, 4, 64, 8, False, dtype=torch.float32, device="cuda", seed=23)
    x.requires_grad_()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        y1 = tt.talk_conv(x, w, b, 8, 31, 31)
        y1.sum().backward()
        g1 = x.grad.clone()
    torch.cuda.current_stream().wait_stream(s)
    x.grad = None
    y2 = tt.talk_conv(x, w, b, 8, 31, 31)
    y2.sum().backward()
    assert torch.equal(y1, y2) and torch.equal(g1, x.grad)


@needs_cuda
def test_cuda_incremental_decoding_and_reorder():
    torch.manual_seed(24)
    mod = TaLKConv(16, decode=True, num_heads=4, min_len_left=5, min_len_right=0).double().cuda().eval()
    x = torch.randn(15, 3, 16, dtype=torch.float64, device="cuda")
    state = {}
    torch.testing.assert_close(decode_all(mod, x[:10], state), mod(x[:10]), rtol=1e-12, atol=1e-12)
    order = torch.tensor([1, 1, 0], device="cuda")
    mod.reorder_incremental_state(state, order)
    got = decode_all(mod, x[10:], state)
    want = mod(torch.cat([x[:10, order], x[10:]]))[10:]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@needs_cuda
def test_cuda_module_matches_cpu_module():
    torch.manual_seed(25)
    cpu = TaLKConv(32, num_heads=4, min_len_left=7, min_len_right=7).eval()
    gpu = TaLKConv(32, num_heads=4, min_len_left=7, min_len_right=7).cuda().eval()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(50, 2, 32)
    torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), rtol=1e-5, atol=1e-5)
