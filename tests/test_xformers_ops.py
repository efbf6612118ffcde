"""The xformers custom ops, checked on CPU with stand-in kernels.

xformers has no CPU kernels, so these tests register CPU stand-ins for the three ``dmpf::xformers_*``
ops for their duration: the same math (masked softmax attention, its log-sum-exp and its analytic
gradient) in the same output layout. What they prove is everything around the CUDA kernels — the
fake (shape) functions agree with real outputs, the autograd formula routes the gradients, the bias
storage is sliced and broadcast without a copy, and a compiled DMPF step on the xformers path is one
graph with no break. The CUDA kernels themselves are xformers'; tests/test_model.py checks them on a GPU.
"""

from __future__ import annotations

import pytest
import torch

from dmpf_cli.config import LossConfig
from dmpf_cli.model import attention, xformers_ops
from dmpf_cli.model.attention import eager_attention, padded_bias
from dmpf_cli.model.losses import dmpf_loss
from dmpf_cli.model.xformers_ops import xformers_bias

from conftest import make_batch, make_model


def _scores(q, k, bias, scale):
    return torch.einsum("bmhd,bnhd->bhmn", q.float(), k.float()) * scale + xformers_bias(bias, q, k).float()


def _forward(q, k, v, bias, scale):
    s = _scores(q, k, bias, scale)
    out = torch.einsum("bhmn,bnhd->bmhd", s.softmax(-1), v.float()).to(q.dtype)
    return out.contiguous(), xformers_ops.lse_padded(s.logsumexp(-1), q.shape[1])


def _inference(q, k, v, bias, scale):
    return _forward(q, k, v, bias, scale)[0]


def _backward(grad, out, lse, q, k, v, bias, scale):
    p, g = _scores(q, k, bias, scale).softmax(-1), grad.float()
    dv = torch.einsum("bhmn,bmhd->bnhd", p, g)
    dp = torch.einsum("bmhd,bnhd->bhmn", g, v.float())
    ds = p * (dp - (dp * p).sum(-1, keepdim=True))
    dq = torch.einsum("bhmn,bnhd->bmhd", ds, k.float()) * scale
    dk = torch.einsum("bhmn,bmhd->bnhd", ds, q.float()) * scale
    return tuple(d.to(t.dtype).contiguous() for d, t in ((dq, q), (dk, k), (dv, v)))


@pytest.fixture(autouse=True)
def cpu_stand_ins():
    with torch.library._scoped_library("dmpf", "IMPL") as lib:
        lib.impl("xformers_attention", _forward, "CPU")
        lib.impl("xformers_attention_backward", _backward, "CPU")
        lib.impl("xformers_attention_inference", _inference, "CPU")
        yield


def inputs(B=2, M=13, N=13, H=2, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    allowed = torch.rand(B, M, N, generator=g) > 0.3
    allowed[:, :, 0] = True  # no empty row
    q = torch.randn(B, M, H, D, generator=g).requires_grad_()
    k, v = (torch.randn(B, N, H, D, generator=g).requires_grad_() for _ in range(2))
    return q, k, v, allowed


def test_ops_pass_torch_opcheck():
    """Schema, autograd registration, fake functions against real outputs, AOT dispatch."""
    q, k, v, allowed = inputs()
    bias = padded_bias(allowed[:, None])
    assert bias.shape == (2, 1, 13, 16)
    for op, args in (
        (torch.ops.dmpf.xformers_attention.default, (q, k, v, bias, 0.3)),
        (torch.ops.dmpf.xformers_attention_inference.default, (q.detach(), k.detach(), v.detach(), bias, 0.3)),
    ):
        torch.library.opcheck(op, args)
    out, lse = torch.ops.dmpf.xformers_attention(q, k, v, bias, 0.3)
    assert lse.shape == (2, 2, 32) and lse.dtype == torch.float32 and bool(torch.isinf(lse[..., 13:]).all())
    grad = torch.randn_like(out)
    torch.library.opcheck(torch.ops.dmpf.xformers_attention_backward.default,
                          (grad, out.detach(), lse, q.detach(), k.detach(), v.detach(), bias, 0.3))


@pytest.mark.parametrize("cross", [False, True])
def test_values_and_gradients_match_eager_attention(cross):
    q, k, v, allowed = inputs(M=5 if cross else 13, N=11)
    bias = padded_bias(allowed[:, None])
    out = attention.attend(q, k, v, attention.PreparedMask("xformers", bias), 0.3)
    ref = eager_attention(*(t.transpose(1, 2) for t in (q, k, v)), allowed[:, None], 0.3).transpose(1, 2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(out)
    for ours, theirs in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # the forward-only op gives the same output
        torch.testing.assert_close(attention.attend(q, k, v, attention.PreparedMask("xformers", bias), 0.3), ref,
                                   rtol=1e-5, atol=1e-6)


def test_bias_view_is_aligned_and_never_copied_over_heads():
    q, k, _, allowed = inputs(M=13, N=11, H=4)
    storage = padded_bias(allowed[:, None], torch.bfloat16)
    view = xformers_bias(storage, q.to(torch.bfloat16), k)
    assert view.shape == (2, 4, 13, 11) and view.stride(1) == 0 and view.stride(-2) % 8 == 0
    assert view.data_ptr() == storage.data_ptr()  # a view of the storage
    other = xformers_bias(storage, q, k)  # q in fp32: the storage is converted whole, alignment kept
    assert other.dtype == torch.float32 and other.stride(-2) % 8 == 0 and other.stride(1) == 0


WEIGHTS = LossConfig()


def _step(model, batch):
    out = model(batch)
    loss, _ = dmpf_loss(out.score, out.aux, torch.linspace(-1, 1, 3), WEIGHTS)
    return loss


@pytest.mark.slow
def test_a_dmpf_step_on_the_xformers_path_compiles_as_one_graph(monkeypatch):
    monkeypatch.setattr("dmpf_cli.model.dmpf.resolve_backend", lambda requested, device: requested)
    model = make_model().eval()
    batch = make_batch()
    model.attention = "sdpa"
    ref = _step(model, batch)
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    model.attention = "xformers"
    torch._dynamo.reset()
    explained = torch._dynamo.explain(_step)(model, batch)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
    model.zero_grad(set_to_none=True)
    loss = torch.compile(_step, fullgraph=True)(model, batch)  # inductor, backward included: it picks the layouts
    loss.backward()
    torch._dynamo.reset()
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="xformers kernels need CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_real_kernels_match_the_shape_functions_and_eager_on_gpu(dtype):
    """On a GPU the ops run xformers' own kernels: opcheck compares them with the fake functions."""
    pytest.importorskip("xformers.ops")
    q, k, v, allowed = (t.detach().to("cuda") for t in inputs(B=2, M=13, N=11, H=2, D=64))
    q, k, v = (t.to(dtype).requires_grad_() for t in (q, k, v))
    bias = padded_bias(allowed[:, None], dtype)
    torch.library.opcheck(torch.ops.dmpf.xformers_attention.default, (q, k, v, bias, 0.125))
    torch.library.opcheck(torch.ops.dmpf.xformers_attention_inference.default,
                          (q.detach(), k.detach(), v.detach(), bias, 0.125))
    out, lse = torch.ops.dmpf.xformers_attention(q, k, v, bias, 0.125)
    torch.library.opcheck(torch.ops.dmpf.xformers_attention_backward.default,
                          (torch.randn_like(out), out.detach(), lse, q.detach(), k.detach(), v.detach(), bias, 0.125))
    ref = eager_attention(*(t.transpose(1, 2) for t in (q, k, v)), allowed[:, None], 0.125).transpose(1, 2)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
