"""The fast paths compute what the reference computes: bf16, compiled and graph-captured steps against the
fp32 eager loss on the same batch (CPU where the mode exists on CPU; GPU tests skip without CUDA), and
`dmpf bench` puts the reference recipe first."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dmpf_cli.config import LossConfig, load_config
from dmpf_cli.errors import DmpfError
from dmpf_cli.model.losses import dmpf_loss
from dmpf_cli.recipes.bench import Setup, loader_throughput, setups
from dmpf_cli.recipes.runtime import compiled

from conftest import assert_done, error_line, make_batch, make_model


def loss_and_grads(model, net, batch, autocast=None):
    model.zero_grad(set_to_none=True)
    with autocast or contextlib.nullcontext():
        out = net(batch)
    loss, _ = dmpf_loss(out.score.float(), {k: v.float() for k, v in out.aux.items()}, torch.linspace(-1, 1, 3, device=out.score.device),
                        LossConfig())
    loss.backward()
    return float(loss.detach()), {n: p.grad.float().clone() for n, p in model.named_parameters() if p.requires_grad}


def reference(preset_overrides=()):
    model = make_model(*preset_overrides).eval()
    model.attention = "eager"
    return model, loss_and_grads(model, model, make_batch())


def test_bf16_autocast_matches_fp32_within_bf16_tolerance():
    model, (ref_loss, _) = reference()
    model.attention = "sdpa"
    loss, grads = loss_and_grads(model, model, make_batch(), torch.autocast("cpu", dtype=torch.bfloat16))
    assert loss == pytest.approx(ref_loss, rel=3e-2)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_bf16_stored_backbone_matches_fp32_within_bf16_tolerance():
    model, (ref_loss, _) = reference()
    model.attention = "sdpa"
    model.backbone.to(torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.backbone.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in trainable), "master weights stay fp32"
    loss, _ = loss_and_grads(model, model, make_batch(), torch.autocast("cpu", dtype=torch.bfloat16))
    assert loss == pytest.approx(ref_loss, rel=3e-2)


@pytest.mark.slow
def test_compiled_step_matches_eager():
    """torch.compile (inductor on CPU) against the fp32 eager reference: loss and every gradient."""
    model, (ref_loss, ref_grads) = reference()
    model.attention = "sdpa"
    loss, grads = loss_and_grads(model, compiled(model, "default", "cpu"), make_batch())
    assert loss == pytest.approx(ref_loss, rel=1e-5, abs=1e-6)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_cuda_graphs_need_cuda(invoke, tmp_path):
    with pytest.raises(DmpfError, match="reduce-overhead captures CUDA graphs"):
        compiled(make_model(), "reduce-overhead", "cpu")
    result = invoke("train", "--output", tmp_path / "r", "training.compile=reduce-overhead", "training.device=cpu")
    error_line(result.exit_code, result.stderr, "training.compile: reduce-overhead")
    assert not (tmp_path / "r").exists()  # refused before any directory or dataset was made
    assert not list(Path(os.environ["DMPF_DATA_DIR"]).glob("synthetic-small*"))


def test_cuda_graphs_refuse_gradient_accumulation():
    from dmpf_cli.recipes.runtime import check_compile

    with pytest.raises(DmpfError, match=r"reduce-overhead cannot accumulate gradients \(training.grad_accum is 8\)"):
        check_compile("reduce-overhead", "cuda", 8)
    check_compile("reduce-overhead", "cuda", 1)
    check_compile("default", "cuda", 8)


def test_bench_rows_on_cpu_start_with_the_reference():
    rows, notes = setups("cpu", None, None, None)
    assert rows[0] == Setup("eager", "fp32", "off")
    assert {r.backend for r in rows} == {"sdpa", "eager"} and {r.compile for r in rows} == {"off"}
    assert len(rows) == len(set(rows)) == 4
    assert any("xformers" in n for n in notes)
    _, notes = setups("cpu", ["sdpa"], ["fp32"], ["off", "reduce-overhead"])
    assert notes == ["reduce-overhead: CUDA graphs need a CUDA device"]


def test_bench_command_json(invoke, monkeypatch):
    monkeypatch.setenv("DMPF_PROGRESS_INTERVAL", "0")  # a progress line at every update
    result = invoke("bench", "--steps", "1", "--warmup", "0", "--precisions", "fp32", "--backends", "sdpa",
                    "--format", "json", "data.synthetic_size=tiny", "training.batch_size=4",
                    "backbone.name=gpt2-tiny-random", "data.text_len=24")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert_done(result.stderr, "benchmarking", "2", "setups")  # not a terminal: paced lines on stderr
    labels = [r["label"] for r in out["rows"]]
    assert labels == ["fp32 eager off", "fp32 sdpa off"]
    first = out["rows"][0]
    assert first["speedup"] == 1.0 and first["flops_per_step"] > 0 and first["ms_per_step"] > 0
    assert 0 < first["fraction_of_peak"] and out["shapes"]["audio"] == [20, 74] and out["batch_size"] == 4
    # the synthetic data is generated on first use, as train does, so the loader is measured beside the step
    assert out["loader_samples_per_s"] > 0 and out["loader_not_measured"] is None


@pytest.mark.slow
def test_bench_reports_the_eval_pass_and_the_scoring_of_the_validation_split(invoke):
    result = invoke("bench", "--steps", "1", "--warmup", "0", "--precisions", "fp32", "--backends", "sdpa",
                    "--format", "json", "data.synthetic_size=tiny", "training.batch_size=4",
                    "backbone.name=gpt2-tiny-random", "data.text_len=24")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert all(r["eval_samples_per_s"] > 0 for r in out["rows"]) and len(out["rows"]) == 2
    assert out["scoring_samples_per_s"] > 0 and out["scoring_not_measured"] is None
    text = invoke("bench", "--steps", "1", "--warmup", "0", "--precisions", "fp32", "--backends", "sdpa",
                  "data.synthetic_size=tiny", "training.batch_size=4", "backbone.name=gpt2-tiny-random",
                  "data.text_len=24")
    assert "eval samples/s" in text.stdout and "scoring the validation split" in text.stdout


@pytest.mark.slow
def test_bench_before_times_each_row_beside_its_plain_kernels_twin(invoke):
    result = invoke("bench", "--before", "--steps", "1", "--warmup", "0", "--precisions", "fp32", "--backends",
                    "sdpa", "--format", "json", "data.synthetic_size=tiny", "training.batch_size=4",
                    "backbone.name=gpt2-tiny-random", "data.text_len=24")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert [r["label"] for r in out["rows"]] == ["fp32 eager off (before)", "fp32 eager off",
                                                 "fp32 sdpa off (before)", "fp32 sdpa off"]
    assert out["rows"][0]["setup"]["speedups"] is False and out["rows"][0]["speedup"] == 1.0
    for before, after in (out["rows"][0:2], out["rows"][2:4]):  # each pair timed together, its ratio reported
        assert after["speedup_over_plain"] == pytest.approx(before["ms_per_step"] / after["ms_per_step"])
        assert "speedup_over_plain" not in before
    assert all(r["eval_samples_per_s"] > 0 for r in out["rows"])
    assert out["scoring_samples_per_s"] > 0 and out["scoring_not_measured"] is None


def test_bench_says_why_the_loader_was_not_measured(tmp_path):
    cfg = load_config("mosei", None, [f"data.path={tmp_path / 'nowhere'}"])
    rate, why = loader_throughput(cfg, 4)
    assert rate is None and "data.path: no prepared mosei dataset" in why and "dmpf prepare --dataset mosei" in why


def test_bench_bad_options(invoke):
    error_line(invoke("bench", "--backends", "flash").exit_code, invoke("bench", "--backends", "flash").stderr,
               "--backends: expected a comma-separated subset of xformers, sdpa, eager")
    twice = invoke("bench", "--backends", "sdpa,sdpa")
    error_line(twice.exit_code, twice.stderr, "--backends: expected a comma-separated subset", "each at most once")
    timed_compiler = invoke("bench", "--compile", "off,default", "--warmup", "0")
    error_line(timed_compiler.exit_code, timed_compiler.stderr, "--warmup: compiled rows need at least 2")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_gpu_fast_paths_match_fp32_eager(mode):
    model, (ref_loss, _) = reference()
    model = model.to("cuda")
    batch = {k: v.to("cuda") for k, v in make_batch().items()}
    model.attention = "auto"
    model.backbone.to(torch.bfloat16)
    net = compiled(model, mode, "cuda")
    for _ in range(3):  # CUDA graphs record on a later call than the first
        loss, _ = loss_and_grads(model, net, batch, torch.autocast("cuda", dtype=torch.bfloat16))
    assert loss == pytest.approx(ref_loss, rel=3e-2)


# -- precision: fp32 where bf16 would round away what matters ------------------------------------

def bf16_forward(model, batch):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model(batch, return_hidden=True)


def test_heads_run_in_fp32_under_bf16_autocast():
    """A bf16 score sits on a grid of 1/64 near ±3: the validation MAE (early stopping) and Acc7 would too."""
    model = make_model().eval()
    out = bf16_forward(model, make_batch())
    assert out.score.dtype == torch.float32
    assert all(a.dtype == torch.float32 for a in out.aux.values())
    # not bf16 values in fp32 clothing: rounding them to bf16 changes them
    assert not torch.equal(out.score, out.score.bfloat16().float())
    for name, a in out.aux.items():
        assert not torch.equal(a, a.bfloat16().float()), name
    loss, _ = dmpf_loss(out.score, out.aux, torch.linspace(-1, 1, 3), LossConfig())
    assert loss.dtype == torch.float32


def test_residual_stream_stays_fp32_with_a_bf16_backbone():
    """The backbone stored in bf16 (as build_model does for bf16 on CUDA), under autocast: the matmuls run in
    bf16, the stream they add to stays fp32, so a gate just opening is not rounded away."""
    model = make_model("mm.gate=tanh").eval()  # tanh gates at 0: every MM contribution is exactly zero
    model.backbone.to(torch.bfloat16)
    batch = make_batch()
    matmul_dtypes = []
    model.backbone.h[0].attn.c_attn.register_forward_hook(lambda m, i, o: matmul_dtypes.append(o.dtype))
    closed = bf16_forward(model, batch)
    assert matmul_dtypes == [torch.bfloat16]
    assert [h.dtype for h in closed.hidden] == [torch.float32] * len(model.backbone.h)

    model.lm.mm["3"].ffn_gate.alpha.data.fill_(1e-4)  # the last MM block's FFN, gated by tanh(1e-4)
    ajar = bf16_forward(model, batch)
    for before, after in zip(closed.hidden[:-1], ajar.hidden[:-1]):
        assert torch.equal(before, after)  # nothing moves before that block
    h, delta = closed.hidden[-1], ajar.hidden[-1] - closed.hidden[-1]  # (B, L, D)
    assert (delta != 0).float().mean() > 0.95  # the fp32 stream keeps the contribution nearly everywhere ...
    assert not torch.equal(closed.reps["h_text"], ajar.reps["h_text"]) and not torch.equal(closed.score, ajar.score)
    # ... which is far below bf16's resolution at the stream's magnitude: a bf16 stream would round it away
    rounded_away = (h.bfloat16() + delta.bfloat16()) == h.bfloat16()
    assert rounded_away.float().mean() > 0.95


def test_the_benchmarks_bf16_stream_is_one_and_rounds_a_small_contribution_away(monkeypatch):
    """benchmarks/residual_precision.py times the step with FusedGPT2.stream_dtype = bf16: it must be the bf16
    stream the fp32 one is measured against."""
    from dmpf_cli.model.fused import FusedGPT2

    monkeypatch.setattr(FusedGPT2, "stream_dtype", torch.bfloat16)
    model = make_model("mm.gate=tanh").eval()
    model.backbone.to(torch.bfloat16)
    batch = make_batch()
    closed = bf16_forward(model, batch)
    assert [h.dtype for h in closed.hidden] == [torch.bfloat16] * len(model.backbone.h)
    model.lm.mm["3"].ffn_gate.alpha.data.fill_(1e-4)
    ajar = bf16_forward(model, batch)
    assert (ajar.hidden[-1] == closed.hidden[-1]).float().mean() > 0.95  # rounded away nearly everywhere


@pytest.mark.slow
def test_the_fused_kernels_train_as_the_plain_ones_to_float32_rounding():
    """The speed-ups (GPT-2's GELU as one kernel, the fused AdamW, the text rows before the first MM block without
    autograd, the encoders' lean training path, the encoders' and the MM blocks' cross-attentions batched, the head
    without nn.MultiheadAttention's checks; design.md §6) against the plain kernels and paths they replace: 20 fp32
    training steps from the same seed, dropout on (in the MM blocks; the encoders have none, as in the embedded
    default, so that they batch), give losses within 1e-6."""
    from dmpf_cli.model.dmpf import build_model
    from dmpf_cli.model.encoders import StreamEncoder
    from dmpf_cli.model.heads import SelfAttentionHead
    from dmpf_cli.model.mm import MMBlock
    from dmpf_cli.recipes.bench import make_batch as bench_batch
    from dmpf_cli.recipes.preflight import resolve_config
    from dmpf_cli.recipes.schedule import build_optimizer, build_scheduler, clip_gradients

    from conftest import TINY

    cfg = resolve_config(overrides=[*TINY, "training.device=cpu", "data.synthetic_size=small", "mm.layers=[0, 1]"])
    dims = (74, 35)
    batches = [bench_batch(cfg, 16, dims, 100, "cpu", seed=i) for i in range(20)]

    def losses(speedups: bool) -> list[float]:
        model, _ = build_model(cfg, dims=dims, device="cpu", seed=5, speedups=speedups)
        model.train()
        optimizer = build_optimizer(model, cfg, fused=speedups)
        scheduler = build_scheduler(optimizer, cfg, 10)
        acts = {type(block.mlp.act).__name__ for block in model.backbone.h}
        assert acts == ({"GELU"} if speedups else {"NewGELUActivation"})  # the premise: other kernels
        assert bool(optimizer.defaults["fused"]) is speedups
        assert model.lm.speedups is speedups  # and other code paths: the text rows before the first MM block
        fast = [m for m in model.modules() if isinstance(m, (StreamEncoder, MMBlock, SelfAttentionHead))]
        assert len(fast) == 4 + 2 + 1 and {m.fast for m in fast} == {speedups}  # encoders, MM blocks, head
        assert [b.batchable() is not None for e in model.encoders.values() for b in e.branches] == [speedups] * 4
        out = []
        torch.manual_seed(0)  # the same dropout masks for both
        for batch in batches:
            result = model(batch)
            loss, _ = dmpf_loss(result.score, result.aux, batch["labels"], cfg.loss, None, batch["weight"])
            loss.backward()
            clip_gradients(optimizer, cfg)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            out.append(float(loss.detach()))
        return out

    fast, plain = losses(True), losses(False)
    assert max(abs(a - b) for a, b in zip(fast, plain)) <= 1e-6
    assert len(set(fast)) > 10  # twenty different batches, each its own loss: a comparison of something


def _default_encoders(*overrides: str):
    from dmpf_cli.config import load_config
    from dmpf_cli.model.dmpf import build_encoders

    torch.manual_seed(3)
    return build_encoders(load_config(overrides=list(overrides)), (74, 35)).train()


def _encoder_inputs(seed: int = 4) -> dict:
    g = torch.Generator().manual_seed(seed)
    audio = (torch.randn(6, 50, 74, generator=g).requires_grad_(), torch.tensor([50, 17, 9, 1, 0, 33]))
    vision = (torch.randn(6, 40, 35, generator=g).requires_grad_(), torch.tensor([40, 3, 12, 0, 0, 25]))
    return {"audio": [audio], "visual": [vision], "audio_visual": [audio, vision]}


def _encode_with_grads(encoders, inputs, batch: bool):
    from dmpf_cli.model.encoders import encode

    encoders.zero_grad(set_to_none=True)
    for streams in inputs.values():
        for x, _ in streams:
            x.grad = None
    torch.manual_seed(9)  # the time-step masks and the whole-modality draws
    out = encode(encoders, inputs, batch=batch)
    g = torch.Generator().manual_seed(10)
    torch.autograd.backward([seq for seq, _ in out.values()],
                            [torch.randn(seq.shape, generator=g) for seq, _ in out.values()])
    grads = [p.grad.clone() for p in encoders.parameters()] + [inputs[m][0][0].grad.clone() for m in ("audio", "visual")]
    return out, grads


def test_the_encoders_run_as_one_batched_computation_bit_for_bit_as_one_at_a_time(monkeypatch):
    """At the embedded default's encoders (no dropout in them; here with time-step masking too, so that the order
    of the random draws is checked), the four branches' transformers run as one (design.md §6): outputs, lengths
    and every gradient, of the parameters and of the frames, equal one encoder at a time bit for bit."""
    from dmpf_cli.model import encoders as encoders_module

    calls = []
    batched = encoders_module.batched_encoder_forward
    monkeypatch.setattr(encoders_module, "batched_encoder_forward",
                        lambda *a: calls.append(len(a[0])) or batched(*a))
    overrides = [f"encoders.{e}.p_mask=0.2" for e in ("audio", "vision", "audio_visual")]
    encoders, inputs = _default_encoders(*overrides), _encoder_inputs()
    fast, fast_grads = _encode_with_grads(encoders, inputs, batch=True)
    assert calls == [4]  # the premise: A's, V's and AV's two branches, in one computation
    plain, plain_grads = _encode_with_grads(encoders, inputs, batch=False)
    assert calls == [4]
    for name in fast:
        assert torch.equal(fast[name][0], plain[name][0]) and torch.equal(fast[name][1], plain[name][1]), name
    assert len(fast_grads) == len(plain_grads) and all(torch.equal(a, b) for a, b in zip(fast_grads, plain_grads))
    assert all(float(g.abs().sum()) > 0 for g in fast_grads[-2:])  # gradients reached the frames
    assert 0 < float(fast["audio_visual"][0].abs().sum()) and not torch.equal(fast["audio"][0], fast["audio_visual"][0])


@pytest.mark.parametrize("why", ["dropout", "eval", "another shape", "a plugin encoder"])
def test_encoders_that_cannot_share_one_computation_run_one_at_a_time(monkeypatch, why):
    from torch import nn

    from dmpf_cli.model import encoders as encoders_module

    monkeypatch.setattr(encoders_module, "batched_encoder_forward", lambda *a: pytest.fail("batched"))
    overrides = {"dropout": ["encoders.vision.dropout=0.1"], "another shape": ["encoders.audio.layers=1"]}
    encoders, inputs = _default_encoders(*overrides.get(why, [])), _encoder_inputs()
    if why == "eval":
        encoders.eval()
    if why == "a plugin encoder":
        class Plugin(nn.Module):  # any module that takes the streams and returns (seq, lengths)
            def forward(self, stream):
                x, lengths = stream
                return x[:, :16, :32], lengths.clamp(max=16)
        encoders["visual"] = Plugin()
    out = encoders_module.encode(encoders, inputs)
    assert set(out) == {"audio", "visual", "audio_visual"} and out["audio"][0].shape == (6, 16, 32)


def test_the_mm_blocks_cross_attentions_run_as_one_bit_for_bit_as_one_at_a_time():
    """The MM block's three cross-attentions (same token counts and encoder widths) as one computation, dropout on:
    the block's output and every gradient equal the groups one at a time bit for bit (design.md §6)."""
    model = make_model("fusion.n_a=4", "fusion.n_v=4", "fusion.n_av=4", "mm.dropout=0.2").train()
    block = model.lm.mm["1"]
    g = torch.Generator().manual_seed(2)
    T = 5
    spans = model.lm.spans(T)
    h = torch.randn(3, spans["audio_visual"].stop, 32, generator=g).requires_grad_()
    from dmpf_cli.model.attention import prepare_mask

    contexts = {}
    for name in ("audio", "visual", "audio_visual"):
        seq = torch.randn(3, 6, 16, generator=g).requires_grad_()
        keys = (torch.arange(6)[None, :] < torch.tensor([6, 2, 1])[:, None])[:, None, :].expand(3, 4, 6)
        contexts[name] = (seq, prepare_mask(keys, "sdpa"))
    grad = torch.randn(h.shape, generator=g)

    def run(fast: bool):
        block.fast = fast
        block.zero_grad(set_to_none=True)
        for x in [h, *(seq for seq, _ in contexts.values())]:
            x.grad = None
        assert block.batchable(spans, contexts) is fast
        torch.manual_seed(0)
        out = block(h, spans, contexts)
        out.backward(grad)
        return out.detach(), [p.grad.clone() for p in block.parameters() if p.grad is not None] + \
            [x.grad.clone() for x in [h, *(seq for seq, _ in contexts.values())]]

    (out_fast, grads_fast), (out_plain, grads_plain) = run(True), run(False)
    assert torch.equal(out_fast, out_plain)
    assert len(grads_fast) == len(grads_plain) > 20 and all(torch.equal(a, b) for a, b in zip(grads_fast, grads_plain))
    assert not torch.equal(out_fast[:, :T], out_fast[:, :T] * 0)  # something flowed


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_the_self_attention_heads_training_path_is_bit_for_bit_nn_multihead_attentions(dropout):
    """The head's projections of same-width representations as one batched product and its attention without
    nn.MultiheadAttention's per-call checks (design.md §6): score and every gradient as through torch's module (at
    batch sizes like the default's: MKL multiplies a handful of rows differently batched and alone)."""
    from dmpf_cli.config import HeadConfig
    from dmpf_cli.model.heads import SelfAttentionHead
    from dmpf_cli.streams import REPRESENTATIONS

    torch.manual_seed(1)
    widths = {n: 64 if n.endswith("tok") or n == "h_text" else 32 for n in REPRESENTATIONS}
    head = SelfAttentionHead(HeadConfig(d=64, heads=4, dropout=dropout), widths).train()
    g = torch.Generator().manual_seed(2)
    reps = {n: torch.randn(16, w, generator=g).requires_grad_() for n, w in widths.items()}

    def run(fast: bool):
        head.fast = fast
        head.zero_grad(set_to_none=True)
        for r in reps.values():
            r.grad = None
        torch.manual_seed(0)
        score = head(reps)
        score.backward(torch.linspace(-1, 1, 16))
        return score.detach(), [p.grad.clone() for p in head.parameters()] + [reps[n].grad.clone() for n in reps]

    (fast, fast_grads), (plain, plain_grads) = run(True), run(False)
    assert torch.equal(fast, plain)
    assert len(fast_grads) == len(plain_grads) and all(torch.equal(a, b) for a, b in zip(fast_grads, plain_grads))
    assert all(float(r.grad.abs().sum()) > 0 for r in reps.values())


def test_an_sdpa_mask_rendered_additive_once_attends_bit_for_bit_as_the_bool_one():
    """SDPA builds an additive mask from a bool one in every call; the fast path renders it once per forward
    (PreparedMask.additive, design.md §6): the same output and gradients bit for bit, also where the queries run in
    another dtype than the one it was rendered in."""
    from dmpf_cli.model.attention import attend, prepare_mask

    g = torch.Generator().manual_seed(3)
    allowed = torch.rand(4, 6, 9, generator=g) > 0.4
    allowed[..., 0] = True  # no empty row, as dmpf's masks have none
    prepared = prepare_mask(allowed, "sdpa")
    additive = prepared.additive(torch.float32)
    assert additive.value.dtype == torch.float32 and prepared.value.dtype == torch.bool
    assert torch.equal(additive.value == 0, prepared.value) and additive.value.min() == float("-inf")
    assert prepare_mask(allowed, "eager").additive(torch.float32).value.dtype == torch.bool  # sdpa's form only

    def run(mask, dtype):
        g = torch.Generator().manual_seed(4)
        q, k, v = (torch.randn(4, n, 2, 8, generator=g, dtype=dtype).requires_grad_() for n in (6, 9, 9))
        out = attend(q, k, v, mask, 0.3)
        out.backward(torch.randn(4, 6, 2, 8, generator=g, dtype=dtype))
        return [out.detach(), q.grad, k.grad, v.grad]

    for dtype in (torch.float32, torch.float64):
        assert all(torch.equal(a, b) for a, b in zip(run(additive, dtype), run(prepared, dtype)))


def test_the_fast_path_renders_each_sdpa_mask_once_and_the_plain_path_leaves_it_to_sdpa(monkeypatch):
    """With the speed-ups every attention call of the fused LM (its blocks and the MM blocks' reads) gets the
    additive mask; without them, the bool mask as before."""
    from dmpf_cli.model import attention as attention_module

    seen = []
    sdpa = attention_module.F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append(attn_mask.dtype)
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(attention_module, "F", SimpleNamespace(scaled_dot_product_attention=spy))  # attend's only
    for speedups, dtype in ((True, torch.float32), (False, torch.bool)):
        model = make_model().train()
        model.lm.speedups = speedups
        seen.clear()
        model(make_batch())
        assert len(seen) >= 4 and set(seen) == {dtype}, (speedups, seen)


def test_fused_adamw_steps_bit_for_bit_as_torchs_fused_adamw():
    """dmpf's FusedAdamW calls torch's fused AdamW kernel with one step counter tensor per group (design.md §6):
    parameters and state as torch.optim.AdamW(fused=True) bit for bit — with a parameter that has no gradient on
    some steps, a learning rate changed on the way, a state dict saved and loaded into a new optimizer, and one of
    torch's loaded into it — and each group's counters views of one tensor."""
    import io

    from dmpf_cli.recipes.schedule import FusedAdamW

    def params(seed=0):
        g = torch.Generator().manual_seed(seed)
        return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(5, 3), (7,), (4, 4), (2,)]]

    def groups(ps):
        return [{"params": ps[:3], "weight_decay": 0.1}, {"params": ps[3:], "weight_decay": 0.0, "lr": 3e-3}]

    a, b = params(), params()
    theirs = torch.optim.AdamW(groups(a), lr=1e-3, betas=(0.9, 0.95), fused=True)
    ours = FusedAdamW(groups(b), lr=1e-3, betas=(0.9, 0.95))
    for t in range(14):
        g = torch.Generator().manual_seed(100 + t)
        for k, (pa, pb) in enumerate(zip(a, b)):
            grad = None if t in (3, 4) and k == 1 else torch.randn(pa.shape, generator=g)
            pa.grad, pb.grad = grad, None if grad is None else grad.clone()
        if t == 6:
            for opt in (theirs, ours):
                opt.param_groups[0]["lr"] = 5e-4
        if t in (8, 11):  # through a saved state dict: ours (8), then torch's (11)
            buffer = io.BytesIO()
            torch.save((ours if t == 8 else theirs).state_dict(), buffer)
            buffer.seek(0)
            ours = FusedAdamW(groups(b), lr=1e-3, betas=(0.9, 0.95))
            ours.load_state_dict(torch.load(buffer))
        theirs.step()
        ours.step()
        assert all(torch.equal(x, y) for x, y in zip(a, b)), t
    mine, torchs = ours.state_dict(), theirs.state_dict()
    assert mine["param_groups"] == torchs["param_groups"]
    assert [float(s["step"]) for s in mine["state"].values()] == [14.0, 12.0, 14.0, 14.0]
    assert all(torch.equal(mine["state"][i][key], torchs["state"][i][key]) for i in torchs["state"]
               for key in ("step", "exp_avg", "exp_avg_sq"))
    storages = {ours.state[p]["step"].untyped_storage().data_ptr() for p in b}
    assert len(storages) == 2  # one counter tensor per group


def test_fused_adamw_leaves_a_group_of_mixed_dtypes_to_torchs_own_step():
    from dmpf_cli.recipes.schedule import FusedAdamW

    a = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, dtype=torch.float64))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    theirs, ours = torch.optim.AdamW(a, lr=0.1, fused=True), FusedAdamW(b, lr=0.1)
    for _ in range(3):
        for pa, pb in zip(a, b):
            pa.grad, pb.grad = torch.full_like(pa, 0.5), torch.full_like(pb, 0.5)
        theirs.step()
        ours.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(b[0], torch.ones(3))


def _text_cache_run(batches, *, cache: bool, limit: int | None = None, monkeypatch=None):
    """Training steps of the conftest model over ``batches``; the losses, the final parameters and how many times
    the text rows before the first MM block were computed."""
    from dmpf_cli.model import fused
    from dmpf_cli.model.text_cache import TextCache

    calls = []
    text_rows = fused.text_rows
    monkeypatch.setattr(fused, "text_rows", lambda *a: calls.append(1) or text_rows(*a))
    model = make_model().train()
    model.lm.text_cache = (TextCache(limit) if limit else TextCache()) if cache else None
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    torch.manual_seed(0)  # the MM blocks' dropout masks
    losses = []
    for batch in batches:
        out = model(batch)
        loss, _ = dmpf_loss(out.score, out.aux, batch["labels"], LossConfig())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return losses, [p.detach().clone() for p in model.parameters()], len(calls), model


def _text_cache_batches(n_batches=8, pool=12, size=6):
    """Batches drawn from a pool of samples in different orders: each text comes back in other company, at other
    positions, as across epochs."""
    from conftest import T

    g = torch.Generator().manual_seed(7)
    samples = {"text_ids": torch.randint(0, 100, (pool, T), generator=g),
               "text_real": torch.arange(T)[None, :] < torch.randint(2, T + 1, (pool, 1), generator=g),
               "audio": torch.randn(pool, 15, 10, generator=g), "audio_lengths": torch.randint(0, 16, (pool,), generator=g),
               "vision": torch.randn(pool, 9, 7, generator=g), "vision_lengths": torch.randint(0, 10, (pool,), generator=g),
               "labels": torch.rand(pool, generator=g) * 6 - 3}
    orders = [torch.randperm(pool, generator=g)[:size] for _ in range(n_batches)]
    return [{k: v[order] for k, v in samples.items()} for order in orders]


def test_the_text_cache_trains_bit_for_bit_as_computing_the_text_rows_every_step(monkeypatch):
    """The text rows' states before the first MM block kept per text (design.md §6): over batches that mix the same
    texts in other orders, the losses and parameters equal computing them every step bit for bit, while later
    batches compute none."""
    batches = _text_cache_batches()
    cached, cached_params, cached_calls, model = _text_cache_run(batches, cache=True, monkeypatch=monkeypatch)
    plain, plain_params, plain_calls, _ = _text_cache_run(batches, cache=False, monkeypatch=monkeypatch)
    assert all(torch.equal(a, b) for a, b in zip(cached, plain)) and len(set(map(float, plain))) == len(plain)
    assert all(torch.equal(a, b) for a, b in zip(cached_params, plain_params))
    blocks = model.lm.first_mm + 1
    assert plain_calls == blocks * len(batches) and cached_calls < plain_calls  # some batches were served
    assert len(model.lm.text_cache.index) == len({bytes(t.numpy()) for b in batches for t in b["text_ids"]})


def test_the_text_cache_forgets_when_the_backbone_changes_and_gives_up_past_its_limit(monkeypatch):
    batches = _text_cache_batches(n_batches=2)
    _, _, _, model = _text_cache_run(batches[:1] * 2, cache=True, monkeypatch=monkeypatch)
    cache = model.lm.text_cache
    assert len(cache.index) == 6
    before = {key: cache.lookup([key])[0] for key in cache.index}
    block = model.lm.gpt2.h[0]
    block.load_state_dict({k: v * 1.01 for k, v in block.state_dict().items()})
    model.eval()  # dropout off, the grad still on: the split path
    with_cache = model(batches[0]).score
    assert cache.index.keys() == before.keys()  # emptied, then kept again, from the new weights
    assert not any(torch.equal(before[key], cache.lookup([key])[0]) for key in before)
    model.lm.text_cache = None
    assert torch.equal(with_cache, model(batches[0]).score)

    small, small_params, _, model = _text_cache_run(batches * 2, cache=True, limit=10_000, monkeypatch=monkeypatch)
    plain, plain_params, _, _ = _text_cache_run(batches * 2, cache=False, monkeypatch=monkeypatch)
    assert model.lm.text_cache.full and not model.lm.text_cache.index and not model.lm.text_cache.slabs
    assert all(torch.equal(a, b) for a, b in zip(small + small_params, plain + plain_params))
