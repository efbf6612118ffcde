"""The paper's mechanism, on a tiny random GPT-2 (CPU): backends agree, the mask's dependency structure holds
layer by layer, closed gates leave the pretrained LM untouched, every ablation trains only what it should."""

from __future__ import annotations

import copy
from unittest.mock import patch

import pytest
import torch

from dmpf_cli.config import LossConfig, load_config
from dmpf_cli.errors import DmpfError
from dmpf_cli.model.attention import BackendError, resolve_backend
from dmpf_cli.model.dmpf import DMPF
from dmpf_cli.model.losses import dmpf_loss

from conftest import LENGTHS, B, T, make_batch, make_model, one_line, tiny_gpt2

PRESETS = ["avseesall", "original", "allcausal", "av_attends_only_av_a_v"]
def spans(model: DMPF) -> dict[str, slice]:
    return model.lm.spans(T)


def real_text(h: torch.Tensor) -> list[torch.Tensor]:
    """The real (non-padding) text positions of each sample: padded rows carry no meaning."""
    return [h[b, :n] for b, n in enumerate(LENGTHS)]


def trainable_grads(model: DMPF) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def run_backward(model: DMPF, batch) -> None:
    model.zero_grad(set_to_none=True)
    out = model(batch)
    loss, _ = dmpf_loss(out.score, out.aux, torch.linspace(-1, 1, B, device=out.score.device), LossConfig())
    loss.backward()


# -- backends ------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", PRESETS)
def test_sdpa_and_eager_agree_forward_and_backward(preset):
    model = make_model(f"fusion.mask={preset}").eval()  # eval: no dropout, so both runs are deterministic
    batch = make_batch()
    results = {}
    for backend in ("sdpa", "eager"):
        model.attention = backend
        out = model(batch, return_hidden=True)
        run_backward(model, batch)
        results[backend] = (out, trainable_grads(model))
    (o_s, g_s), (o_e, g_e) = results["sdpa"], results["eager"]
    torch.testing.assert_close(o_s.score, o_e.score, rtol=1e-5, atol=1e-5)
    for h_s, h_e in zip(o_s.hidden, o_e.hidden):
        torch.testing.assert_close(h_s[:, T:], h_e[:, T:], rtol=1e-5, atol=1e-5)
        for a, b in zip(real_text(h_s), real_text(h_e)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert g_s.keys() == g_e.keys() and g_s
    for name in g_s:
        torch.testing.assert_close(g_s[name], g_e[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_the_model_runs_the_fusion_masks_own_rendering(backend, monkeypatch):
    """The fused model asks FusionMask, with the batch's padding, for its backend's rendering: the object and the
    code path tests/test_mask.py checks against design.md §4, not a parallel one."""
    from dmpf_cli.model.mask import FusionMask

    rendered = []
    real_render = FusionMask.render

    def spy(mask, *args, **kwargs):
        rendered.append((mask, real_render(mask, *args, **kwargs)))
        return rendered[-1][1]

    monkeypatch.setattr(FusionMask, "render", spy)
    model = make_model("fusion.mask=original", f"training.attention={backend}").eval()
    batch = make_batch()
    with torch.no_grad():
        model(batch)
    assert len(rendered) == 1  # once per forward, the same prepared mask in every block
    mask, prepared = rendered[0]
    assert mask.preset == "original" and torch.equal(mask.text_padding, batch["text_real"])
    assert prepared.backend == backend and torch.equal(prepared.value, mask.sdpa_mask())

    # and it is what attention sees: hiding the AV tokens' view of A and V changes only what AV attends to
    monkeypatch.setattr(FusionMask, "render", real_render)
    with torch.no_grad():
        original = model(batch).reps
        model.lm.mask_preset = "avseesall"
        model.lm.__dict__.pop("_layout_cache")
        avseesall = model(batch).reps
    assert torch.equal(original["a_tok"], avseesall["a_tok"]) and torch.equal(original["h_text"], avseesall["h_text"])
    assert not torch.allclose(original["av_tok"], avseesall["av_tok"])


def test_backend_resolution_on_cpu():
    assert resolve_backend("auto", "cpu") == "sdpa"
    assert resolve_backend("eager", "cpu") == "eager"
    with pytest.raises(BackendError, match="'xformers' cannot run here: xformers has no kernels for the cpu device"):
        resolve_backend("xformers", "cpu")
    with pytest.raises(BackendError, match="expected one of auto, xformers, sdpa, eager"):
        resolve_backend("flash", "cpu")
    model = make_model("training.attention=xformers")
    with pytest.raises(BackendError):
        model(make_batch())


@pytest.fixture
def cuda_with_broken_xformers(monkeypatch):
    """This CPU machine as a CUDA 13 machine with the xformers 0.0.35 wheel looks to dmpf: CUDA is there, xformers
    imports, and its first real call fails (its extension needs libcudart.so.12). Returns the probe's call count."""
    import dmpf_cli.model.attention as attention

    calls = []

    def probe(device):
        calls.append(device)
        raise NotImplementedError("xFormers wasn't built with CUDA support\n  see the install notes")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(attention, "_xformers_import_problem", lambda: None)
    monkeypatch.setattr(attention, "probe_xformers", probe)
    attention._xformers_probe_problem.cache_clear()
    attention._announced.clear()
    yield calls
    attention._xformers_probe_problem.cache_clear()
    attention._announced.clear()


def test_auto_falls_back_to_sdpa_when_xformers_imports_but_cannot_run(cuda_with_broken_xformers, capsys):
    assert resolve_backend("auto", "cuda") == "sdpa"
    assert resolve_backend("auto", "cuda:0") == "sdpa"
    model = make_model("training.attention=auto")
    assert model.backend_on("cuda") == "sdpa"
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines  # one line, once per process
    assert lines[0].startswith("note: training.attention auto uses sdpa: xformers cannot run here: a tiny xformers "
                               "attention failed (NotImplementedError: xFormers wasn't built with CUDA support)")
    assert "nvidia-cuda-runtime-cu12" in lines[0] and "LD_LIBRARY_PATH" in lines[0]
    assert cuda_with_broken_xformers == [torch.device("cuda"), torch.device("cuda:0")]  # once per device


def test_xformers_by_name_that_cannot_run_names_the_cause_and_the_fix(cuda_with_broken_xformers):
    with pytest.raises(BackendError) as exc:
        resolve_backend("xformers", "cuda")
    message = one_line(exc)
    assert "attention backend 'xformers' cannot run here: a tiny xformers attention failed (NotImplementedError: " \
           "xFormers wasn't built with CUDA support); to fix it, install CUDA 12's runtime (pip install " \
           "nvidia-cuda-runtime-cu12==12.8.90) and put its nvidia/cuda_runtime/lib directory on LD_LIBRARY_PATH" in message


def test_auto_takes_xformers_once_its_probe_has_run(cuda_with_broken_xformers, monkeypatch):
    import dmpf_cli.model.attention as attention

    monkeypatch.setattr(attention, "probe_xformers", lambda device: None)
    assert resolve_backend("auto", "cuda") == "xformers"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_xformers_probe_passes_on_a_working_gpu():
    from dmpf_cli.model.attention import probe_xformers, xformers_problem

    probe_xformers(torch.device("cuda"))
    assert xformers_problem("cuda") is None


# -- the mask's promise, layer by layer ----------------------------------------------------------

def _hidden(model, batch):
    with torch.no_grad():
        return model(batch, return_hidden=True).hidden


@pytest.mark.parametrize(
    "changed, unchanged, changes",
    [
        ("audio", ["text", "visual"], ["audio", "audio_visual"]),
        ("vision", ["text", "audio"], ["visual", "audio_visual"]),
    ],
)
def test_dependency_structure(changed, unchanged, changes):
    model = make_model().eval()
    base = make_batch()
    other = dict(base)
    other[changed] = base[changed] + torch.randn_like(base[changed])
    h0, h1 = _hidden(model, base), _hidden(model, other)
    assert len(h0) == 4
    sp = spans(model)
    for layer, (a, b) in enumerate(zip(h0, h1)):
        for seg in unchanged:
            if seg == "text":
                for x, y in zip(real_text(a), real_text(b)):
                    torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=f"text moved at layer {layer}")
            else:
                torch.testing.assert_close(a[:, sp[seg]], b[:, sp[seg]], rtol=0, atol=1e-6,
                                           msg=f"{seg} moved at layer {layer}")
    for seg in changes:  # after the last MM block the affected tokens must have moved
        assert not torch.allclose(h0[-1][:, sp[seg]], h1[-1][:, sp[seg]], atol=1e-4), seg


def test_av_tokens_depend_on_both_and_text_on_neither():
    model = make_model().eval()
    base = make_batch()
    # random perturbations: an affine change of a frame would vanish in the encoders' input LayerNorm
    both = dict(base, audio=base["audio"] + torch.randn_like(base["audio"]),
                vision=base["vision"] + torch.randn_like(base["vision"]))
    h0, h1 = _hidden(model, base), _hidden(model, both)
    sp = spans(model)
    assert not torch.allclose(h0[-1][:, sp["audio_visual"]], h1[-1][:, sp["audio_visual"]], atol=1e-4)
    for a, b in zip(h0, h1):
        for x, y in zip(real_text(a), real_text(b)):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-6)


def test_padded_text_never_reaches_real_positions():
    model = make_model().eval()
    base = make_batch()
    other = dict(base, text_ids=base["text_ids"].clone())
    other["text_ids"][1, LENGTHS[1]:] = (other["text_ids"][1, LENGTHS[1]:] + 1) % 100  # only padding changes
    out0, out1 = (model(b, return_hidden=True) for b in (base, other))
    torch.testing.assert_close(out0.score, out1.score, rtol=0, atol=1e-6)
    torch.testing.assert_close(out0.hidden[-1][1, T:], out1.hidden[-1][1, T:], rtol=0, atol=1e-6)


# -- closed gates leave the LM untouched ---------------------------------------------------------

def test_tanh_gates_at_zero_reproduce_hugging_face_gpt2():
    model = make_model("mm.gate=tanh").eval()
    batch = make_batch()
    with torch.no_grad():
        ours = model(batch, return_hidden=True)
        reference = copy.deepcopy(model.backbone)
        ref = reference(input_ids=batch["text_ids"], attention_mask=batch["text_real"].long(),
                        output_hidden_states=True)
    # HF: hidden_states[i + 1] is after block i; the last one has ln_f applied.
    for layer in range(len(ours.hidden) - 1):
        for x, y in zip(real_text(ours.hidden[layer]), real_text(ref.hidden_states[layer + 1])):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    final = model.backbone.ln_f(ours.hidden[-1])
    for x, y in zip(real_text(final), real_text(ref.last_hidden_state)):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    b = torch.arange(B)
    torch.testing.assert_close(ours.reps["h_text"], ref.last_hidden_state[b, torch.tensor(LENGTHS) - 1])


def test_ffn_over_tokens_keeps_the_text_stream_the_pretrained_lms():
    batch = make_batch()
    with torch.no_grad():
        reference = make_model().backbone(input_ids=batch["text_ids"], attention_mask=batch["text_real"].long())
        tokens_only = make_model("mm.ffn=tokens").eval()  # sigmoid gates: the MM blocks are half open
        sequence = make_model("mm.ffn=sequence").eval()
        ours, moved = tokens_only(batch, return_hidden=True), sequence(batch, return_hidden=True)
    final = tokens_only.backbone.ln_f(ours.hidden[-1])
    for x, y in zip(real_text(final), real_text(reference.last_hidden_state)):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    # the same weights with the FFN over the whole sequence: the text states move, the token states differ
    assert not torch.allclose(real_text(sequence.backbone.ln_f(moved.hidden[-1]))[0],
                              real_text(reference.last_hidden_state)[0], atol=1e-3)
    assert not torch.allclose(ours.hidden[-1][:, T:], moved.hidden[-1][:, T:], atol=1e-4)
    run_backward(tokens_only, batch)  # and it trains
    assert all(p.grad is not None for p in tokens_only.lm.mm.parameters())


def test_gates_train_and_start_where_the_spec_says():
    for kind, start in (("sigmoid", 0.5), ("tanh", 0.0)):
        model = make_model(f"mm.gate={kind}")
        gates = [m for m in model.modules() if type(m).__name__ == "Gate"]
        assert len(gates) == 2 * (3 + 1)  # two MM blocks × (three cross-attentions + FFN)
        assert all(g.alpha.requires_grad and float(g.value().detach()) == start for g in gates)
    run_backward(model, make_batch())
    assert all(g.alpha.grad is not None for g in gates)


def test_mm_ffn_starts_as_the_lm_block_mlp():
    model = make_model()
    for layer, block in model.lm.mm.items():
        lm_block = model.backbone.h[int(layer)]
        for ours, theirs in zip(block.ffn.parameters(), lm_block.mlp.parameters()):
            assert torch.equal(ours, theirs) and ours.requires_grad and not theirs.requires_grad
            assert ours.data_ptr() != theirs.data_ptr()


# -- ablations and what trains -------------------------------------------------------------------

ABLATIONS = [(3, 2, 4), (3, 0, 0), (0, 2, 0), (0, 0, 4), (3, 2, 0), (3, 0, 4), (0, 2, 4), (0, 0, 0), (0, 0, 16)]


@pytest.mark.parametrize("head", ["self-attention", "concat"])
@pytest.mark.parametrize("counts", ABLATIONS, ids=lambda c: "a{}v{}av{}".format(*c))
def test_ablations_forward_backward_and_only_intended_parameters_learn(counts, head):
    n_a, n_v, n_av = counts
    model = make_model(f"fusion.n_a={n_a}", f"fusion.n_v={n_v}", f"fusion.n_av={n_av}", f"head.name={head}",
                       "backbone.dropout=0")  # with GPT-2's dropout on, the LM follows train mode (tested below).train()
    expected_groups = [g for g, n in zip(("audio", "visual", "audio_visual"), counts) if n]
    assert list(model.encoders) == expected_groups
    assert set(model.lm.tokens) == set(expected_groups)
    assert {n: tuple(p.shape) for n, p in model.lm.tokens.items()} == {
        g: (n, 32) for g, n in zip(("audio", "visual", "audio_visual"), counts) if n
    }
    prefixes = {"audio": "a", "visual": "v", "audio_visual": "av"}
    expected_reps = {"h_text"} | {f"{prefixes[g]}_{s}" for g in expected_groups for s in ("tok", "enc")}
    batch = make_batch()
    out = model(batch)
    assert set(out.reps) == expected_reps and set(out.aux) == expected_reps
    assert out.score.shape == (B,) and torch.isfinite(out.score).all()
    run_backward(model, batch)
    for name, p in model.backbone.named_parameters():
        assert not p.requires_grad and p.grad is None, name
    for name, p in model.named_parameters():
        if name.startswith("lm.gpt2."):
            continue
        assert p.requires_grad, f"{name} is frozen but should train"
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name} got no (finite) gradient"
    assert not model.backbone.training, "the frozen LM must stay in eval mode"


def test_text_only_model_is_the_lm_plus_head():
    model = make_model("fusion.n_a=0", "fusion.n_v=0", "fusion.n_av=0")
    assert len(model.lm.mm) == 0 and len(model.encoders) == 0
    assert set(model.rep_dims) == {"h_text"}


# -- training-time regularisers: GPT-2's own dropout, SoftPerm -------------------------------------

# every other source of randomness in training off, so that a difference comes from what a test turns on
QUIET = [*(f"encoders.{e}.{k}=0" for e in ("audio", "vision", "audio_visual")
           for k in ("dropout", "p_mask", "whole_modality_dropout")),
         "mm.dropout=0", "head.dropout=0", "backbone.dropout=0", "augment.softperm=0"]


def quiet_model(*overrides: str) -> DMPF:
    return make_model(*QUIET, *overrides)


def two_forwards(model: DMPF, batch) -> tuple:
    # with autograd on, as in training: eval-mode torch encoder layers would otherwise take their fused fast path
    return model(batch, return_hidden=True), model(batch, return_hidden=True)


def gpt2_dropouts(model: DMPF) -> list[torch.nn.Dropout]:
    gpt2 = model.backbone
    return [gpt2.drop, *(d for b in gpt2.h for d in (b.attn.attn_dropout, b.attn.resid_dropout, b.mlp.dropout))]


def test_backbone_dropout_acts_in_training_only_and_the_weights_stay_frozen():
    model = quiet_model("backbone.dropout=0.5")
    batch = make_batch()
    assert [d.p for d in gpt2_dropouts(model)] == [0.5] * (1 + 3 * len(model.backbone.h))  # tiny_gpt2 says 0.0
    model.train()
    assert model.backbone.training and all(m.training for m in model.backbone.modules())
    a, b = two_forwards(model, batch)
    assert not torch.allclose(a.score, b.score)
    for x, y in zip(real_text(a.hidden[0]), real_text(b.hidden[0])):  # the text stream itself is perturbed
        assert not torch.allclose(x, y)
    run_backward(model, batch)
    for name, p in model.backbone.named_parameters():
        assert not p.requires_grad and p.grad is None, name

    model.eval()
    assert not model.backbone.training and not any(m.training for m in model.backbone.modules())
    a, b = two_forwards(model, batch)
    assert torch.equal(a.score, b.score)
    reference = quiet_model().eval()(batch)  # the same weights without dropout: evaluation is unaffected
    assert torch.equal(a.score, reference.score)
    model.train()
    assert model.backbone.training


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_attention_probability_dropout_reaches_the_frozen_blocks(backend):
    model = quiet_model("backbone.dropout=0.5", f"training.attention={backend}").train()
    for d in gpt2_dropouts(model):  # only attn_dropout left on
        if d not in [b.attn.attn_dropout for b in model.backbone.h]:
            d.p = 0.0
    a, b = two_forwards(model, make_batch())
    assert not torch.allclose(a.hidden[0], b.hidden[0])
    for block in model.backbone.h:
        block.attn.attn_dropout.p = 0.0
    a, b = two_forwards(model, make_batch())
    assert torch.equal(a.hidden[0], b.hidden[0])


def test_zero_backbone_dropout_trains_like_eval():
    model = quiet_model()
    batch = make_batch()
    trained = model.train()(batch, return_hidden=True)
    assert not model.backbone.training  # nothing in it would act: it stays in eval mode
    evaluated = model.eval()(batch, return_hidden=True)
    torch.testing.assert_close(trained.score, evaluated.score, rtol=0, atol=1e-6)
    for x, y in zip(trained.hidden, evaluated.hidden):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "inputs, moved, kept",
    [("[text]", ["h_text"], ["a_enc", "v_enc", "av_enc"]),
     ("[audio]", ["a_enc", "av_enc"], ["h_text", "v_enc"]),
     ("[vision]", ["v_enc", "av_enc"], ["h_text", "a_enc"])],
)
def test_softperm_acts_in_training_only_on_the_inputs_listed(inputs, moved, kept):
    model = quiet_model("augment.softperm=0.5", "augment.softperm_std=0.1", f"augment.softperm_inputs={inputs}")
    batch = make_batch()
    unaugmented = quiet_model().eval()(batch)  # the same weights, no SoftPerm
    assert torch.equal(model.eval()(batch).score, unaugmented.score)  # eval: unaffected
    reference = unaugmented.reps
    model.train()
    a, b = two_forwards(model, batch)
    assert not torch.allclose(a.score, b.score)
    for name in moved:
        assert not torch.allclose(a.reps[name], reference[name]), name
    for name in kept:  # text never sees the modalities, nor the encoders the text
        torch.testing.assert_close(a.reps[name], reference[name], rtol=0, atol=1e-6, msg=name)


def test_softperm_gets_each_input_with_its_real_lengths(monkeypatch):
    """Frames before the encoders (once per modality: the AV encoder reads the same), text embeddings before
    the positions, each with its own real lengths and the config's fraction and spread."""
    from dmpf_cli.model import dmpf as dmpf_module
    from dmpf_cli.model import fused as fused_module

    calls = []

    def spy(x, lengths, fraction, std=0.0):
        calls.append((x, lengths, fraction, std))
        return x

    monkeypatch.setattr(dmpf_module, "softperm", spy)
    monkeypatch.setattr(fused_module, "softperm", spy)
    model = quiet_model("augment.softperm=0.3", "augment.softperm_std=0.2")
    batch = make_batch()
    with torch.no_grad():
        model.eval()(batch)
        assert calls == []
        model.train()(batch)
    assert [c[2:] for c in calls] == [(0.3, 0.2)] * 3
    (audio, n_a, *_), (vision, n_v, *_), (text, n_t, *_) = calls
    assert audio is batch["audio"] and n_a is batch["audio_lengths"]
    assert vision is batch["vision"] and n_v is batch["vision_lengths"]
    assert torch.equal(text, model.backbone.wte(batch["text_ids"])) and n_t.tolist() == LENGTHS


# -- the loss ------------------------------------------------------------------------------------

def test_loss_parts_weights_and_unimodal_labels():
    y = torch.tensor([0.5, -1.0])
    score = torch.tensor([1.0, -1.0])
    aux = {"h_text": torch.tensor([0.0, 0.0]), "a_enc": torch.tensor([0.5, -1.0]), "a_tok": torch.tensor([1.5, -1.0]),
           "av_tok": torch.tensor([0.5, 0.0]), "av_enc": torch.tensor([0.0, 0.0])}
    weights = LossConfig(task=1.0, a=2.0, v=5.0, av=0.0, text=1.0, tokens=0.5)
    total, parts = dmpf_loss(score, aux, y, weights)
    assert set(parts) == {"task", "a", "av", "text", "tokens", "total"}  # no vision stream: no v term
    expected = {"task": 0.25, "a": 0.0, "av": 0.75, "text": 0.75, "tokens": (0.5 + 0.5) / 2}
    for name, value in expected.items():
        assert float(parts[name]) == pytest.approx(value), name
    assert float(total) == pytest.approx(0.25 + 2.0 * 0.0 + 0.0 * 0.75 + 1.0 * 0.75 + 0.5 * 0.5)
    unimodal = {"A": torch.tensor([0.0, 0.0]), "T": torch.tensor([0.0, 0.0])}
    _, parts = dmpf_loss(score, aux, y, weights, unimodal=unimodal)  # off by default: the sentiment label
    assert float(parts["a"]) == 0.0 and float(parts["text"]) == pytest.approx(0.75)
    with_unimodal = weights.model_copy(update={"unimodal_labels": True})
    _, parts = dmpf_loss(score, aux, y, with_unimodal, unimodal=unimodal)
    assert float(parts["a"]) == pytest.approx(0.75) and float(parts["text"]) == 0.0
    assert float(parts["av"]) == pytest.approx(0.75)  # no unimodal label for the AV term


# -- GPU only ------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_xformers_matches_eager_on_gpu(dtype):
    pytest.importorskip("xformers.ops")
    model = make_model().eval().to("cuda")
    model.backbone.to(dtype)
    batch = {k: v.to("cuda") for k, v in make_batch().items()}
    results = {}
    for backend in ("xformers", "eager"):
        model.attention = backend
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            out = model(batch, return_hidden=True)
            run_backward(model, batch)
        results[backend] = (out, trainable_grads(model))
    tol = 3e-2 if dtype == torch.bfloat16 else 1e-4
    (ox, gx), (oe, ge) = results["xformers"], results["eager"]
    torch.testing.assert_close(ox.score, oe.score, rtol=tol, atol=tol)
    grad_atol = 3e-2 if dtype == torch.bfloat16 else 1e-3  # xformers' own fp32 backward tolerance is 9e-4
    for name in gx:
        torch.testing.assert_close(gx[name], ge[name], rtol=tol * 10, atol=grad_atol, msg=name)


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_clm_is_hugging_faces_lm_loss_on_every_gpu_backend(dtype):
    pytest.importorskip("xformers.ops")
    model = make_model("mm.gate=tanh", "loss.clm=1.0").train()
    batch = make_batch()
    expected = hugging_face_lm_loss(model, batch)  # fp32, on the CPU
    model.to("cuda").backbone.to(dtype)
    batch = {k: v.to("cuda") for k, v in batch.items()}
    tol = 3e-2 if dtype == torch.bfloat16 else 1e-4
    for backend in ("xformers", "sdpa", "eager"):
        model.attention = backend
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            clm = model(batch).clm
        clm.backward()
        torch.testing.assert_close(clm.cpu(), expected, rtol=tol, atol=tol, msg=backend)


def test_loss_ignores_fillers_of_a_last_batch():
    y = torch.tensor([1.0, -1.0, 5.0])
    score = torch.tensor([0.0, 0.0, -5.0])  # the third sample is a filler: its huge error must not count
    aux = {"h_text": torch.tensor([1.0, -1.0, 100.0])}
    weight = torch.tensor([1.0, 1.0, 0.0])
    total, parts = dmpf_loss(score, aux, y, LossConfig(), sample_weight=weight)
    assert float(parts["task"]) == pytest.approx(1.0) and float(parts["text"]) == 0.0
    assert float(total) == pytest.approx(1.0)


# -- the causal-LM term (loss.clm) ------------------------------------------------------------------

def hugging_face_lm_loss(model: DMPF, batch) -> torch.Tensor:
    """The Hugging Face GPT2LMHeadModel's own loss on the batch's text, with the backbone's weights (tied head)."""
    from transformers import GPT2LMHeadModel

    lm = GPT2LMHeadModel(model.backbone.config)
    lm.transformer.load_state_dict(model.backbone.state_dict())
    lm.lm_head.weight = lm.transformer.wte.weight
    ids, real = batch["text_ids"], batch["text_real"]
    with torch.no_grad():
        return lm.eval()(input_ids=ids, attention_mask=real.long(), labels=ids.masked_fill(~real, -100)).loss


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_clm_is_hugging_faces_own_lm_loss(backend):
    """Closed (tanh) gates leave the text stream the LM's: the term is then exactly GPT2LMHeadModel's loss, with
    the padded targets ignored (one text fills the length, one is padded, one has no target at all)."""
    model = make_model("mm.gate=tanh", "loss.clm=1.0", f"training.attention={backend}").train()
    batch = make_batch()
    out = model(batch)
    torch.testing.assert_close(out.clm, hugging_face_lm_loss(model, batch), rtol=1e-5, atol=1e-5)
    other = dict(batch, text_ids=batch["text_ids"].masked_fill(~batch["text_real"], 7))  # other padding ids
    torch.testing.assert_close(model(other).clm, out.clm, rtol=0, atol=1e-6)


def test_clm_only_in_training_and_only_when_weighted():
    batch = make_batch()
    assert make_model("loss.clm=1.0").eval()(batch).clm is None
    assert make_model().train()(batch).clm is None  # loss.clm 0 (the embedded default): not computed


def test_clm_trains_what_runs_over_the_text_and_is_its_own_loss_part():
    model = make_model("loss.clm=1.0").train()  # sigmoid gates: the MM blocks' FFN runs over the text
    batch = make_batch()
    out = model(batch)
    out.clm.backward()
    ffn = [p.grad for name, p in model.lm.mm.named_parameters() if "ffn" in name or "mlp" in name]
    assert ffn and all(g is not None and g.abs().sum() > 0 for g in ffn)
    # the text never sees the fusion tokens or the encoders: the term gives them nothing
    assert all(p.grad is None or not p.grad.any() for p in model.encoders.parameters())
    assert all(p.grad is None or not p.grad.any() for p in model.lm.tokens.parameters())
    assert all(p.grad is None for p in model.backbone.parameters())  # frozen, its head included
    y = torch.linspace(-1, 1, B)
    aux = {k: v.detach() for k, v in out.aux.items()}
    without, _ = dmpf_loss(out.score.detach(), aux, y, LossConfig())
    total, parts = dmpf_loss(out.score.detach(), aux, y, LossConfig(clm=2.0), clm=out.clm.detach())
    assert float(parts["clm"]) == pytest.approx(float(out.clm.detach()))
    assert float(total) == pytest.approx(float(without) + 2.0 * float(out.clm.detach()))


def test_clm_without_a_single_target_is_zero_not_nan():
    model = make_model("loss.clm=1.0").train()
    batch = make_batch()
    batch["text_real"] = torch.arange(T)[None, :].expand(B, -1) < 1  # one real token each: nothing to predict
    out = model(batch)
    assert float(out.clm) == 0.0
    out.clm.backward()  # and the backward is finite
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_clm_under_bf16_autocast_stays_near_fp32():
    model = make_model("loss.clm=1.0").train()
    batch = make_batch()
    torch.manual_seed(0)
    fp32 = model(batch).clm
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model(batch).clm
    assert bf16.dtype == torch.float32  # the cross-entropy runs in fp32
    torch.testing.assert_close(bf16, fp32, rtol=2e-2, atol=2e-2)


def test_clm_refuses_a_backbone_whose_lm_head_is_not_its_embeddings():
    gpt2 = tiny_gpt2()
    gpt2.config.tie_word_embeddings = False
    with pytest.raises(DmpfError, match="loss.clm: backbone .* an LM head of its own"):
        DMPF(load_config(overrides=["loss.clm=1.0"]), gpt2, (10, 7))
    DMPF(load_config(), gpt2, (10, 7))  # without the term the head is never used


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_text_rows_without_autograd_before_the_first_mm_block_change_nothing(backend):
    """The speed-up of design.md §6: up to the first MM block the text rows run without autograd. The forward
    pass, every hidden state and every trainable parameter's gradient equal one pass over all rows."""
    model = make_model(f"training.attention={backend}", "mm.layers=[1, 3]").train()
    batch = make_batch()

    def run(split: bool):
        model.lm.speedups = split  # the GELU kernel stays as built: only the split differs
        model.zero_grad(set_to_none=True)
        calls = []
        with patch("dmpf_cli.model.fused.split_block_forward", side_effect=lambda *a: calls.append(1) or real(*a)):
            out = model(batch, return_hidden=True)
        (out.score.sum() + sum(a.sum() for a in out.aux.values())).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
        return out, grads, len(calls)

    from dmpf_cli.model import fused

    real = fused.split_block_forward
    torch.manual_seed(3)
    whole, whole_grads, whole_calls = run(False)
    torch.manual_seed(3)
    split, split_grads, split_calls = run(True)
    assert (whole_calls, split_calls) == (0, 2)  # blocks 0 and 1, before and at the first MM block
    for a, b in zip(whole.hidden, split.hidden):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(whole.score, split.score, rtol=1e-6, atol=1e-6)
    assert whole_grads.keys() == split_grads.keys() and len(whole_grads) > 20
    for name, grad in whole_grads.items():
        torch.testing.assert_close(split_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    with torch.no_grad():  # evaluation: one pass over every row, nothing to split
        model.eval()
        run_calls = []
        with patch("dmpf_cli.model.fused.split_block_forward", side_effect=lambda *a: run_calls.append(1)):
            model(batch)
        assert run_calls == []
