"""SoftPerm (dmpf_cli.model.augment): a per-sample shuffle in time of a random subset of feature dimensions,
over the real steps only; the model applies it in training (tests/test_model.py checks the wiring)."""

from __future__ import annotations

import torch

from dmpf_cli.model.augment import softperm

B, L, D = 5, 9, 64
LENGTHS = torch.tensor([9, 6, 1, 0, 4])


def padded_input(seed: int = 0) -> torch.Tensor:
    """Distinct values everywhere (so a moved value says where it came from); padded steps hold inf."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randperm(B * L * D, generator=g).float().view(B, L, D)
    return x.masked_fill(torch.arange(L)[None, :, None] >= LENGTHS[:, None, None], float("inf"))


def test_only_chosen_dimensions_move_within_their_own_dimension_and_sample():
    x = padded_input()
    torch.manual_seed(0)
    out = softperm(x, LENGTHS, 0.3, 0.1)
    moved_any = False
    for b, n in enumerate(LENGTHS.tolist()):
        assert torch.equal(out[b, n:], x[b, n:]), "padded steps must stay as they are"
        changed = (out[b, :n] != x[b, :n]).any(dim=0)  # (D,) the dimensions whose values moved
        moved_any |= bool(changed.any())
        for d in range(D):
            if not changed[d]:
                continue
            # the chosen dimension is a permutation of its own real values: the multiset is kept
            assert torch.equal(out[b, :n, d].sort().values, x[b, :n, d].sort().values)
        if n > 1 and changed.any():
            # one permutation per sample: every chosen dimension is shuffled by the same p_b
            d0 = int(changed.nonzero()[0])
            source = [int((x[b, :n, d0] == v).nonzero()) for v in out[b, :n, d0]]  # p_b(t) for each t
            for d in changed.nonzero().flatten().tolist():
                assert torch.equal(out[b, :n, d], x[b, source, d])
    assert moved_any


def test_all_dimensions_follow_one_permutation_at_fraction_one():
    x = padded_input(1)
    torch.manual_seed(1)
    out = softperm(x, LENGTHS, 1.0)
    b, n = 0, int(LENGTHS[0])
    perm = [int((x[b, :n, 0] == v).nonzero()) for v in out[b, :n, 0]]
    assert sorted(perm) == list(range(n)) and perm != list(range(n))
    assert torch.equal(out[b, :n], x[b, perm])


def test_the_share_of_chosen_dimensions_follows_the_fraction():
    x = torch.arange(L, dtype=torch.float32)[None, :, None].expand(400, L, 256).contiguous()  # each dim: 0..L-1
    torch.manual_seed(2)
    out = softperm(x, torch.full((400,), L), 0.25, 0.0)
    moved = (out != x).any(dim=1).float().mean()  # a chosen dimension stays put only if p_b is the identity
    assert abs(float(moved) - 0.25) < 0.01


def test_fraction_zero_is_the_identity_and_draws_nothing():
    x = padded_input()
    state = torch.get_rng_state()
    assert softperm(x, LENGTHS, 0.0, 0.5) is x
    assert torch.equal(torch.get_rng_state(), state)


def test_samples_of_length_zero_or_one_are_unchanged():
    x = padded_input()
    torch.manual_seed(3)
    out = softperm(x, LENGTHS, 1.0)
    for b in (2, 3):  # lengths 1 and 0
        assert torch.equal(out[b], x[b])


def test_reproducible_by_seed():
    x = padded_input()
    outs = []
    for _ in range(2):
        torch.manual_seed(4)
        outs.append(softperm(x, LENGTHS, 0.5, 0.1))
    assert torch.equal(*outs)
    assert not torch.equal(outs[0], softperm(x, LENGTHS, 0.5, 0.1))


def test_gradients_flow_back_to_where_each_value_came_from():
    x = torch.randn(B, L, D, requires_grad=True)
    torch.manual_seed(5)
    out = softperm(x, LENGTHS, 0.5, 0.1)
    weights = torch.randn(B, L, D)
    (out * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # a permutation: every input element feeds exactly one output element, so the gradient is the
    # weights permuted back — the same multiset, per sample
    for b in range(B):
        assert torch.equal(x.grad[b].flatten().sort().values, weights[b].flatten().sort().values)


def test_padding_that_holds_inf_gives_finite_gradients():
    x = padded_input().requires_grad_(True)
    torch.manual_seed(6)
    out = softperm(x, LENGTHS, 1.0)
    out.masked_fill(torch.isinf(out), 0.0).sum().backward()
    assert torch.isfinite(x.grad).all()
