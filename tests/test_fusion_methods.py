"""Merge methods as pure tensor functions: hand-computed TIES, task-arithmetic linearity, DARE statistics."""
from __future__ import annotations

import pytest
import torch

from omnisdk.fusion.methods import (
    BUILTIN_METHODS,
    dare_drop,
    dare_linear,
    dare_ties,
    generator_for,
    kth_largest,
    sign_consensus_mean,
    task_arithmetic,
    ties,
    trim_magnitude,
)
from omnisdk.hookspecs import hookimpl
from omnisdk.plugin_manager import merge_methods, register_plugin


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


# Three task vectors of five entries, TIES at density 0.6: each keeps int(0.6 * 5) = 3 entries.
D1 = t(0.5, -0.1, 0.3, -0.4, 0.05)
D2 = t(-0.2, 0.6, -0.1, -0.3, 0.25)
D3 = t(0.4, 0.2, -0.7, 0.1, -0.05)


def test_ties_trim_keeps_the_largest_magnitudes():
    # |D1| = .5 .1 .3 .4 .05 -> the top three are .5, .4, .3
    close(trim_magnitude(D1, 0.6), t(0.5, 0, 0.3, -0.4, 0))
    # |D2| = .2 .6 .1 .3 .25 -> .6, .3, .25
    close(trim_magnitude(D2, 0.6), t(0, 0.6, 0, -0.3, 0.25))
    # |D3| = .4 .2 .7 .1 .05 -> .7, .4, .2
    close(trim_magnitude(D3, 0.6), t(0.4, 0.2, -0.7, 0, 0))
    close(trim_magnitude(D1, 1.0), D1)
    close(trim_magnitude(D1, 0.01), t(0.5, 0, 0, 0, 0))  # at least one entry survives
    # k = int(0.5 * 4) = 2; three entries tie at |1|: exactly two survive, the lowest indices first
    close(trim_magnitude(t(1, -1, 1, 0.5), 0.5), t(1, -1, 0, 0))


def test_kth_largest_selects_what_a_full_sort_would():
    generator = torch.Generator().manual_seed(3)
    for values in (torch.randn(10_001, generator=generator), torch.randint(0, 7, (5_000,), generator=generator).float(),
                   torch.randn(64, generator=generator).double(), torch.randn(300, generator=generator).half()):
        ordered = values.sort(descending=True).values
        for k in (1, 2, values.numel() // 3, values.numel() - 1, values.numel()):
            assert kth_largest(values, k).item() == ordered[k - 1].item()


def test_ties_elects_signs_by_mass_and_takes_the_disjoint_mean():
    # trimmed:  T1 = [ .5,  0,  .3, -.4,  0 ]
    #           T2 = [ 0,  .6,  0,  -.3, .25]
    #           T3 = [ .4, .2, -.7,  0,   0 ]
    # mass = sum = [.9, .8, -.4, -.7, .25] -> elected signs [+, +, -, -, +]
    # entry 0: T1, T3 agree -> (.5 + .4) / 2 = .45
    # entry 1: T2, T3 agree -> (.6 + .2) / 2 = .4
    # entry 2: only T3 (-.7) agrees; T1's +.3 is outvoted -> -.7
    # entry 3: T1, T2 agree -> (-.4 - .3) / 2 = -.35
    # entry 4: only T2 -> .25
    merged = ties([D1, D2, D3], weights=[1, 1, 1], density=0.6)
    close(merged, t(0.45, 0.4, -0.7, -0.35, 0.25))


def test_ties_uses_the_weights_in_the_vote_and_in_the_mean():
    # weights 3, 1, 1: weighted deltas [.6, -1.2], [-.5, .1], [.4, -.2]
    # mass [.5, -1.3] -> [+, -]; entry 0: (.6 + .4) / (3 + 1) = .25; entry 1: (-1.2 - .2) / (3 + 1) = -.35
    merged = ties([t(0.2, -0.4), t(-0.5, 0.1), t(0.4, -0.2)], weights=[3, 1, 1], density=1.0)
    close(merged, t(0.25, -0.35))
    # A weight can flip the vote: 2 * .3 - .5 = .1 > 0 elects +, though .3 - .5 < 0 would elect -.
    close(ties([t(0.3), t(-0.5)], weights=[2, 1], density=1.0), t(0.3))
    close(ties([t(0.3), t(-0.5)], weights=[1, 1], density=1.0), t(-0.5))


def test_sign_consensus_ties_and_zeros():
    # entry 0 and 1: mass 0 elects +; only the positive delta agrees -> 1 / 1
    # entry 2: both deltas are 0, which agrees with no sign -> stays 0 (no division by zero)
    close(sign_consensus_mean([t(1, -1, 0), t(-1, 1, 0)], [1, 1]), t(1, 1, 0))


def test_task_arithmetic_is_the_weighted_sum_and_linear():
    # [1, 2] * .5 + [3, -1] * 2 = [.5 + 6, 1 - 2] = [6.5, -1]
    close(task_arithmetic([t(1, 2), t(3, -1)], weights=[0.5, 2.0]), t(6.5, -1))
    g = torch.Generator().manual_seed(0)
    deltas = [torch.randn(4, 3, generator=g) for _ in range(3)]
    weights = [0.2, 1.5, -0.7]
    merged = task_arithmetic(deltas, weights=weights)
    close(task_arithmetic([2.5 * d for d in deltas], weights=weights), 2.5 * merged)  # merge(a d) = a merge(d)
    close(task_arithmetic([w * d for w, d in zip(weights, deltas)], weights=[1, 1, 1]), merged)  # weights scale deltas
    close(task_arithmetic(deltas[:1], weights=[1.0]), deltas[0])  # one specialist: its own task vector


def test_methods_do_not_change_their_inputs():
    deltas = [D1.clone(), D2.clone(), D3.clone()]
    for name, method in BUILTIN_METHODS.items():
        method(deltas, weights=[1, 2, 3], density=0.5, generator=generator_for(0, name))
        for before, after in zip([D1, D2, D3], deltas):
            assert torch.equal(before, after), name


def test_dare_keeps_density_and_rescales_without_bias():
    delta = torch.full((200_000,), 0.3)
    dropped = dare_drop(delta, 0.25, generator_for(1, "w"))
    kept = dropped != 0
    assert abs(kept.float().mean().item() - 0.25) < 0.005  # binomial sd ~ 0.001
    close(dropped[kept], torch.full((int(kept.sum()),), 0.3 / 0.25))  # survivors scaled by 1 / density
    assert abs(dropped.mean().item() - 0.3) < 0.01  # unbiased: E[mask / p] = 1
    # Over many seeds every entry of a small tensor averages back to itself.
    small = t(0.5, -1.0, 2.0)
    mean = torch.stack([dare_drop(small, 0.5, generator_for(s, "w")) for s in range(4000)]).mean(dim=0)
    torch.testing.assert_close(mean, small, rtol=0.1, atol=0.05)


def test_dare_linear_is_unbiased_and_dare_ties_reduces_to_ties_at_full_density():
    g = torch.Generator().manual_seed(3)
    deltas = [torch.randn(50_000, generator=g) for _ in range(2)]
    out = dare_linear(deltas, weights=[1.0, 2.0], density=0.4, generator=generator_for(0, "p"))
    expected = deltas[0] + 2 * deltas[1]
    assert abs((out.sum() - expected.sum()) / expected.abs().sum()) < 0.02
    close(dare_ties(deltas, weights=[1, 2], density=1.0, generator=generator_for(0, "p")),
          ties(deltas, weights=[1, 2], density=1.0))
    close(dare_linear(deltas, weights=[1, 2], density=1.0, generator=generator_for(0, "p")), expected)


def test_dare_is_deterministic_by_seed_and_parameter_name():
    delta = torch.ones(1000)
    same = [dare_drop(delta, 0.5, generator_for(7, "layer.weight")) for _ in range(2)]
    assert torch.equal(same[0], same[1])
    assert not torch.equal(same[0], dare_drop(delta, 0.5, generator_for(8, "layer.weight")))
    assert not torch.equal(same[0], dare_drop(delta, 0.5, generator_for(7, "layer.bias")))
    # The mask depends on (seed, name) only, so the order parameters are visited in changes nothing.
    names = ["a", "b", "c"]
    forward = {n: dare_ties([delta, -delta], weights=[1, 1], density=0.5, generator=generator_for(0, n)) for n in names}
    backward = {n: dare_ties([delta, -delta], weights=[1, 1], density=0.5, generator=generator_for(0, n)) for n in reversed(names)}
    assert all(torch.equal(forward[n], backward[n]) for n in names)


def test_builtin_methods_are_registered_through_the_hook():
    methods = merge_methods()
    assert {"task_arithmetic", "ties", "dare_ties", "dare_linear"} <= set(methods)
    assert all(methods[name] is fn for name, fn in BUILTIN_METHODS.items())


def test_a_third_party_registers_a_method_through_the_hook(mean_merge):
    assert "mean_of_deltas" not in merge_methods()
    mean_of_deltas = mean_merge()
    assert merge_methods()["mean_of_deltas"] is mean_of_deltas
    close(merge_methods()["mean_of_deltas"]([t(1, 2), t(3, 4)], weights=[1, 1], density=1.0, generator=None), t(2, 3))


def test_a_name_taken_by_a_builtin_cannot_be_registered_again():
    class Clash:
        @hookimpl
        def omnisdk_register_merge_methods(self, register):
            register("ties", lambda deltas, **options: deltas[0])

    register_plugin(Clash(), name="clash")
    with pytest.raises(ValueError, match="ties"):
        merge_methods()
