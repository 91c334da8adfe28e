"""EGA: autograd's gradients against the hand formula, the loss value unchanged, factor 1 = plain InfoNCE, the CLI switch."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from omnisdk.trainers.commands import _common, overrides_from
from omnisdk.trainers.config import EgaSettings, TrainConfig
from omnisdk.trainers.ega import ega_info_nce, hardness
from omnisdk.trainers.info_nce import info_nce
from omnisdk.trainers.losses import contrastive_loss

TAU = 0.5


def _unit(rows):
    x = np.asarray(rows, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# Three (query, positive) pairs. Query 0's in-batch negative p1 is nearly as close as its own positive,
# so it is "hard"; the other negatives are far.
Q = _unit([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
P = _unit([[0.9, 0.3, 0.0], [0.8, 0.6, 0.0], [0.1, 0.0, 1.0]])


def _hand_gradients(weights: np.ndarray):
    """d/dq and d/dp of query->item InfoNCE (mean over rows) with logit gradients multiplied by `weights`:
    dL/dl_ij = w_ij (P_ij - y_ij) / N,  dq_i = sum_j dL/dl_ij p_j / tau,  dp_j = sum_i dL/dl_ij q_i / tau."""
    n = len(Q)
    logits = Q @ P.T / TAU
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    dlogits = weights * (prob - np.eye(n)) / n
    return dlogits @ P / TAU, dlogits.T @ Q / TAU


def _autograd(fn, **kwargs):
    q = torch.tensor(Q, dtype=torch.float64, requires_grad=True)
    p = torch.tensor(P, dtype=torch.float64, requires_grad=True)
    loss = fn(q, p, TAU, **kwargs)
    loss.backward()
    return loss.detach(), q.grad.numpy(), p.grad.numpy()


def test_relative_rule_gradients_match_the_hand_formula():
    s = Q @ P.T  # cosines; diagonal = positives
    margin, factor = 0.5, 3.0
    # h_ij = clamp(1 + (s_ij - s_ii) / margin, 0, 1) on negatives, worked out here by hand:
    # row 0: s = (0.949, 0.8, 0.0995): h01 = 1 + (0.8 - 0.949)/0.5 = 0.7026, h02 = 0
    # row 1: s = (0.316, 0.6, 0): h10 = 1 + (0.316 - 0.6)/0.5 = 0.4325, h12 = 0
    # row 2: s = (0, 0, 0.995): both 0
    h = np.zeros((3, 3))
    h[0, 1] = 1 + (s[0, 1] - s[0, 0]) / margin
    h[1, 0] = 1 + (s[1, 0] - s[1, 1]) / margin
    assert h[0, 1] == pytest.approx(0.7026, abs=1e-3) and h[1, 0] == pytest.approx(0.4325, abs=1e-3)
    weights = 1 + (factor - 1) * h
    dq, dp = _hand_gradients(weights)
    loss, gq, gp = _autograd(ega_info_nce, symmetric=False, factor=factor, rule="relative", margin=margin)
    np.testing.assert_allclose(gq, dq, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gp, dp, rtol=1e-10, atol=1e-12)
    # The amplifier changes the gradient, not the loss.
    plain_loss, plain_q, _ = _autograd(info_nce, symmetric=False)
    assert loss.item() == plain_loss.item()
    assert not np.allclose(gq, plain_q)
    np.testing.assert_allclose(plain_q, _hand_gradients(np.ones((3, 3)))[0], rtol=1e-10)


def test_topk_rule_amplifies_only_the_most_similar_negative():
    weights = np.ones((3, 3))
    weights[0, 1] = weights[1, 0] = 4.0  # the most similar negative of rows 0 and 1 (cosines 0.8 and 0.316)
    weights[2, 0] = 4.0  # row 2: s = (0.0995, 0, ...) after normalising: p0 beats p1
    dq, dp = _hand_gradients(weights)
    _, gq, gp = _autograd(ega_info_nce, symmetric=False, factor=4.0, rule="topk", top_k=1)
    np.testing.assert_allclose(gq, dq, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gp, dp, rtol=1e-10, atol=1e-12)


def test_mined_rule_amplifies_explicit_hard_negatives_only():
    q = torch.tensor(Q, dtype=torch.float64, requires_grad=True)
    p = torch.tensor(P, dtype=torch.float64)
    hard = torch.tensor(_unit([[0.7, 0.7, 0.0], [0.0, 0.9, 0.4], [1.0, 0.0, 0.0]]), dtype=torch.float64).unsqueeze(1)
    mask = torch.tensor([[True], [True], [False]])
    ega_info_nce(q, p, TAU, hard, mask, symmetric=False, factor=5.0, rule="mined").backward()
    logits = np.concatenate([Q @ P.T, np.einsum("nd,nd->n", Q, hard[:, 0].numpy())[:, None]], 1) / TAU
    logits[2, 3] = -np.inf  # query 2's padded slot
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    weights = np.ones((3, 4))
    weights[:2, 3] = 5.0
    target = np.hstack([np.eye(3), np.zeros((3, 1))])
    candidates = np.concatenate([np.broadcast_to(P, (3, 3, 3)), hard.numpy()], 1)  # (N, N+H, D)
    expected = np.einsum("nc,ncd->nd", weights * (prob - target) / 3, candidates) / TAU
    np.testing.assert_allclose(q.grad.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", ["relative", "topk", "mined"])
def test_factor_one_is_plain_info_nce_bit_for_bit(rule):
    torch.manual_seed(0)
    q0, p0 = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim=-1)
    hard0 = torch.nn.functional.normalize(torch.randn(5, 2, 8), dim=-1)
    mask = torch.tensor([[True, True], [True, False], [False, False], [True, True], [True, False]])
    results = []
    for fn, kwargs in ((info_nce, {}), (ega_info_nce, {"factor": 1.0, "rule": rule})):
        q, p, hard = (t.clone().requires_grad_(True) for t in (q0, p0, hard0))
        temperature = torch.tensor(0.07, requires_grad=True)
        loss = fn(q, p, temperature, hard, mask, symmetric=True, **kwargs)
        loss.backward()
        results.append((loss.detach(), q.grad, p.grad, hard.grad, temperature.grad))
    for plain, ega in zip(*results):
        assert torch.equal(plain, ega)


def test_hardness_is_zero_off_negatives_and_bounded():
    sims = torch.tensor([[0.9, 0.95, 0.2], [0.5, 0.4, 0.39]])
    negative = torch.tensor([[False, True, True], [True, False, True]])
    h = hardness(sims, torch.tensor([0.9, 0.4]), negative, "relative", margin=0.1)
    assert h[0, 0] == 0 and h[1, 1] == 0  # positives are never amplified
    assert h[0, 1] == 1 and h[1, 0] == 1  # negatives above their positive: fully hard
    assert h[0, 2] == 0 and h[1, 2] == pytest.approx(0.9)


def test_cli_flag_and_toml_turn_ega_on(tmp_path):
    parser = argparse.ArgumentParser()
    _common(parser)
    base = ["--data", "d", "--out", "o"]
    assert "ega" not in overrides_from(parser.parse_args(base))
    assert TrainConfig(**overrides_from(parser.parse_args(base + ["--ega"]))).ega == EgaSettings()
    toml = tmp_path / "train.toml"
    toml.write_text('ega = {factor = 3.0, rule = "topk", top_k = 2}\n')
    cfg = TrainConfig(**overrides_from(parser.parse_args(base + ["--config", str(toml), "--ega-factor", "5"])))
    assert cfg.ega == EgaSettings(factor=5.0, rule="topk", top_k=2)
    with pytest.raises(ValueError):
        TrainConfig(ega={"factor": 0.5})  # an amplifier below 1 would damp hard negatives


def test_contrastive_loss_picks_the_configured_loss():
    q = torch.tensor(Q, dtype=torch.float64, requires_grad=True)
    p = torch.tensor(P, dtype=torch.float64)
    contrastive_loss(TrainConfig(symmetric=False, ega={"factor": 3.0, "margin": 0.5}), q, p, TAU).backward()
    _, expected, _ = _autograd(ega_info_nce, symmetric=False, factor=3.0, margin=0.5)
    np.testing.assert_allclose(q.grad.numpy(), expected, rtol=1e-12)
    q.grad = None
    contrastive_loss(TrainConfig(symmetric=False), q, p, TAU).backward()
    _, plain, _ = _autograd(info_nce, symmetric=False)
    np.testing.assert_allclose(q.grad.numpy(), plain, rtol=1e-12)


def test_a_specialist_trained_with_ega_records_it_and_moves_differently(tmp_path):
    """End to end through the trainer: same seed and data, EGA on or off; the loss curve starts equal
    (EGA changes gradients, not the loss) and the weights end up different."""
    from omnisdk import checkpoint as ckpt
    from omnisdk.datasets.omniworld.build import make_omniworld
    from omnisdk.presets import build_base
    from omnisdk.trainers.stages import train_specialist

    data, base = tmp_path / "data", tmp_path / "base"
    make_omniworld(data, domains=("scenes",))
    build_base("tiny", modalities=["image"]).save(base)
    settings = {"steps": 2, "batch_size": 6, "log_every": 1, "hard_negatives": 1, "learning_rate": 1e-3}
    plain = train_specialist(base, "image", data, tmp_path / "plain", settings, show_progress=False)
    amplified = train_specialist(base, "image", data, tmp_path / "ega", {**settings, "ega": {"factor": 8.0}},
                                 show_progress=False)
    assert plain.losses[0] == amplified.losses[0]
    assert plain.fingerprint != amplified.fingerprint
    lineage = ckpt.read_manifest(tmp_path / "ega").lineage
    assert lineage.settings["ega"] == {"factor": 8.0, "rule": "relative", "margin": 0.1, "top_k": 1}
