import dataclasses

import numpy as np
import pytest
import torch

from qtbench.baselines.bc import BC, BCConfig
from qtbench.baselines.decision_transformer import TOKENS_PER_STEP, DecisionTransformer, DTConfig
from qtbench.algorithms.base import Batch, EnvSpecInfo, Window
from qtbench.algorithms.torch_utility import greedy_decode, to_bins
from qtbench import nets
from qtbench.nets import CausalTransformer, ContextTokens, distinct_instructions
from qtbench.q_transformer import QTransformer, QTransformerConfig

SPEC = EnvSpecInfo(state_dim=5, action_dim=4, vocab_size=12, max_tokens=6, max_episode_steps=10)


def _window(batch=3, history=4):
    g = torch.Generator().manual_seed(0)
    instruction = torch.randint(2, 12, (batch, 6), generator=g)
    instruction[:, 4:] = 0
    mask = torch.ones(batch, history, dtype=torch.bool)
    mask[0, :2] = False
    return Window(
        states=torch.randn(batch, history, 5, generator=g), mask=mask, instruction=instruction,
        actions=torch.zeros(batch, history, 4), returns_to_go=torch.zeros(batch, history),
        timesteps=torch.zeros(batch, history, dtype=torch.long),
    )


def test_padding_and_future_tokens_do_not_leak():
    torch.manual_seed(0)
    context, body = ContextTokens(SPEC, history=4, d_model=16), CausalTransformer(16, 2, 2)
    window = _window()
    def run():
        states, ignore = context.states(window)
        return _plain(body, context.instruction(window.instruction), states, ignore)

    out = run()
    assert out.shape == (3, 10, 16) and torch.isfinite(out).all()
    # Changing a padded state or a later state must not change earlier outputs.
    window.states[0, 0] += 100.0
    window.states[1, 3] += 100.0
    out2 = run()
    assert torch.allclose(out[0, 8:], out2[0, 8:], atol=1e-5)
    assert torch.allclose(out[1, :9], out2[1, :9], atol=1e-5)
    assert not torch.allclose(out[1, 9], out2[1, 9])


def test_a_stacked_window_is_one_token_blind_to_its_padding():
    torch.manual_seed(0)
    context = ContextTokens(SPEC, history=4, d_model=16, stack=True)
    window = _window()
    tokens, ignore = context.states(window)
    assert tokens.shape == (3, 1, 16) and not ignore.any()
    window.states[0, :2] += 100.0  # sample 0's padded steps
    again, _ = context.states(window)
    assert torch.equal(tokens[0], again[0])
    window.states[1, 0] += 1.0  # a real step of sample 1
    assert not torch.allclose(tokens[1], context.states(window)[0][1])


def test_the_instruction_token_is_one_token_blind_to_trailing_padding():
    torch.manual_seed(0)
    context = ContextTokens(SPEC, history=4, d_model=16, encode=2)
    words = torch.tensor([[2, 4, 5, 6, 7, 0], [3, 0, 0, 0, 0, 0]])
    token, ignore = context.instruction(words)
    assert token.shape == (2, 1, 16) and not ignore.any()
    assert torch.allclose(token, context.instruction(words[:, :5])[0], atol=1e-6)
    assert torch.allclose(token[1], context.instruction(words[1:, :1])[0][0], atol=1e-6)  # read at its last word


# ---- the instruction prefix: the same function as the whole sequence --------------------
# Each model's plain path below runs every sample's whole sequence [words, states, action
# tokens] through the backbone, as the code did before the words were computed once per
# distinct instruction; the models' own forward passes must agree with it.
SIZES = dict(d_model=16, n_layers=2, n_heads=2, history=3, batch_size=8)


def _mixed_window(batch: int = 9, history: int = 3) -> Window:
    """Repeated instructions of different lengths (one all-but-first padding), padded states."""
    g = torch.Generator().manual_seed(3)
    distinct = torch.tensor([[4, 5, 6, 7, 0, 0], [7, 6, 5, 4, 0, 0], [3, 0, 0, 0, 0, 0], [2, 3, 4, 5, 6, 0]])
    instruction = distinct[torch.tensor([0, 1, 2, 0, 3, 1, 0, 2, 1])[:batch]]
    mask = torch.ones(batch, history, dtype=torch.bool)
    mask[0, :2] = mask[4, 0] = mask[7, :1] = False
    return Window(
        states=torch.randn(batch, history, 5, generator=g), mask=mask, instruction=instruction,
        actions=torch.rand(batch, history, 4, generator=g) * 2 - 1, returns_to_go=torch.rand(batch, history, generator=g),
        timesteps=torch.arange(history).expand(batch, -1).clone(),
    )


def _plain(backbone, instruction, states, state_ignore, after=None, last=None):
    """The backbone over each sample's whole sequence [instruction tokens, states, after]
    (``instruction``: the sample's own (tokens, padding mask), from ``ContextTokens.instruction``)."""
    parts, ignore = [instruction[0], states], [instruction[1], state_ignore]
    if after is not None:
        parts.append(after)
        ignore.append(state_ignore.new_zeros(after.shape[:2]))
    return backbone(torch.cat(parts, dim=1), torch.cat(ignore, dim=1), last=last)


@pytest.mark.parametrize("collide", [False, True])
def test_distinct_instructions_trims_padding_and_indexes_every_sample(collide, monkeypatch):
    if collide:  # every row hashes alike: the exact search must take over
        monkeypatch.setattr(nets, "_ROW_HASH", torch.zeros(64, dtype=torch.long))
    window = _mixed_window()
    rows, index = distinct_instructions(window.instruction)
    assert rows.shape == (4, 5)  # 4 distinct rows; the all-padding last column is dropped
    assert torch.equal(rows[index], window.instruction[:, :5])


# (stack_history, instruction_token): the state window and instruction as tokens
LAYOUTS = [(False, False), (True, False), (True, True)]


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("stack, token", LAYOUTS)
def test_q_transformer_matches_the_whole_sequence(train, stack, token):
    torch.manual_seed(0)
    algo = QTransformer(SPEC, QTransformerConfig(n_bins=7, stack_history=stack, instruction_token=token, **SIZES))
    net, window = algo.online.train(train), _mixed_window()
    bins = to_bins(window.actions[:, -1], 7)
    for k in (1, 2, 4):
        states, ignore = net.context.states(window)
        after = net.action_tokens(bins, 0, k, 9)
        plain = net.heads(_plain(net.backbone, net.context.instruction(window.instruction), states, ignore,
                                 after, last=k))
        assert torch.allclose(net(window, bins, n_tokens=k), plain, atol=1e-5), k
    # ... and so do the gradients of the whole update's parameters.
    fast = torch.autograd.grad(net(window, bins).square().sum(), list(net.parameters()), allow_unused=True)
    states, ignore = net.context.states(window)
    plain = net.heads(_plain(net.backbone, net.context.instruction(window.instruction), states, ignore,
                             net.action_tokens(bins, 0, 4, 9), last=4))
    slow = torch.autograd.grad(plain.square().sum(), list(net.parameters()), allow_unused=True)
    for a, b in zip(fast, slow):
        assert (a is None and b is None) or torch.allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stack, token", LAYOUTS)
def test_q_transformer_cached_greedy_matches_uncached_decoding(stack, token):
    torch.manual_seed(0)
    algo = QTransformer(SPEC, QTransformerConfig(n_bins=7, stack_history=stack, instruction_token=token, **SIZES))
    window = _mixed_window()
    with torch.no_grad():
        uncached = greedy_decode(lambda chosen, i: algo.online(window, chosen, n_tokens=i + 1)[:, i], 9, 4, "cpu")
        cached = algo.online.eval().greedy(window)
        assert torch.equal(cached, uncached)
        # the chosen bins, fed back in: every dimension's logits as the cache computed them
        assert torch.equal(algo.online(window, cached).argmax(-1), cached)


@pytest.mark.parametrize("dropout, train", [(0.1, False), (0.0, True)])
@pytest.mark.parametrize("stack, token", LAYOUTS)
def test_bc_matches_the_whole_sequence_and_caches_greedy(dropout, train, stack, token):
    torch.manual_seed(0)
    algo = BC(SPEC, BCConfig(bins=7, dropout=dropout, stack_history=stack, instruction_token=token, **SIZES))
    policy, window = algo.policy.train(train), _mixed_window()
    prev = to_bins(window.actions[:, -1], 7)[:, :3]
    states, ignore = policy.context.states(window)
    plain = policy.head(_plain(policy.body, policy.context.instruction(window.instruction), states, ignore,
                               policy.action_tokens(prev, 0, 4, 9), last=4))
    assert torch.allclose(policy.logits(window, prev), plain, atol=1e-5)
    with torch.no_grad():
        policy.eval()
        uncached = greedy_decode(lambda chosen, i: policy.logits(window, chosen[:, :i])[:, i], 9, 4, "cpu")
        assert torch.equal(policy.greedy(window), uncached)


@pytest.mark.parametrize("token", [False, True])
def test_dt_matches_the_whole_sequence(token):
    """DT's forward (instruction once per distinct row, then the steps) equals one pass over
    [instruction tokens, (R, s, a) per step]; with ``instruction_token`` the instruction is one token."""
    torch.manual_seed(0)
    algo = DecisionTransformer(SPEC, DTConfig(**{**SIZES, "n_layers": 3}, instruction_token=token))
    model, window = algo.model.eval(), _mixed_window()
    tokens, ignore = model.tokens(window)
    words, padding = nets.instruction_tokens(model.words(window.instruction), window.instruction == 0, model.encoder)
    assert words.shape[1] == (1 if token else window.instruction.shape[1])
    out = _plain(model.body, (words, padding), tokens, ignore)
    plain = torch.tanh(model.predict(out[:, words.shape[1] + 1 :: TOKENS_PER_STEP]))
    assert torch.allclose(model(window), plain, atol=1e-5)
    assert torch.allclose(model(window, last_step_only=True)[:, 0], plain[:, -1], atol=1e-5)


@pytest.mark.parametrize("algo_class, config_class, token", [
    (QTransformer, QTransformerConfig, False), (QTransformer, QTransformerConfig, True),
    (DecisionTransformer, DTConfig, True),
])
def test_word_order_still_matters(algo_class, config_class, token):
    """'move the orange near the red can' is not 'move the red can near the orange'."""
    torch.manual_seed(0)
    extra = {"n_bins": 7} if algo_class is QTransformer else {"dropout": 0.0}
    algo = algo_class(SPEC, config_class(instruction_token=token, **extra, **SIZES))
    window = _mixed_window()
    assert torch.equal(window.instruction[0].sort().values, window.instruction[1].sort().values)
    row0 = [0, 0, 2, 3, 4, 5, 6, 7, 8]  # sample 1 meets sample 0's steps
    swapped = dataclasses.replace(window, instruction=window.instruction[[1, 0, 2, 3, 4, 5, 6, 7, 8]],
                                  **{f: getattr(window, f)[row0] for f in ("states", "mask", "actions", "returns_to_go")})
    same = dataclasses.replace(swapped, instruction=window.instruction[[0, 0, 2, 3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        if algo_class is QTransformer:
            out, out_same = algo.online(swapped, None, n_tokens=1), algo.online(same, None, n_tokens=1)
        else:
            out, out_same = algo.model.eval()(swapped), algo.model(same)
    assert not torch.allclose(out[0], out[1], atol=1e-4)  # same state, reversed words
    assert torch.allclose(out_same[0], out_same[1], atol=1e-6)  # same state, same words


def _batch() -> Batch:
    window, next_window = _mixed_window(), _mixed_window()
    next_window.states += 0.1
    return Batch(window=window, reward=torch.zeros(9), mc_return=torch.rand(9), nstep_return=torch.zeros(9),
                 next_window=next_window, bootstrap_discount=torch.full((9,), 0.98))


@pytest.mark.parametrize("algo_class, config", [
    (QTransformer, QTransformerConfig(n_bins=7, **SIZES)), (BC, BCConfig(bins=7, dropout=0.0, **SIZES)),
    (DecisionTransformer, DTConfig(**SIZES, dropout=0.0)),
])
def test_bf16_autocast_updates_and_acts_close_to_float32(algo_class, config):
    losses, actions = [], []
    for amp in ("none", "bf16"):
        torch.manual_seed(0)
        algo = algo_class(SPEC, dataclasses.replace(config, amp=amp))
        losses.append(float(algo.update(_batch())["loss"]))
        actions.append(algo.act(_mixed_window()))
    assert losses[0] != losses[1] and losses[1] == pytest.approx(losses[0], rel=0.05)  # bf16 ran, and is close
    assert actions[1].shape == (9, 4) and np.all(np.abs(actions[1]) <= 1.0)


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "none")])
def test_amp_auto_runs_bf16_only_where_the_hardware_has_it(monkeypatch, native, expected):
    monkeypatch.setattr(nets, "native_bf16", lambda device: native)
    cpu = torch.device("cpu")
    assert nets.resolve_amp("auto", cpu) == expected
    assert (nets.resolve_amp("none", cpu), nets.resolve_amp("bf16", cpu)) == ("none", "bf16")  # pinned
    assert BC(SPEC, BCConfig(bins=7, amp="auto", **SIZES)).amp == expected


@pytest.mark.parametrize("native", [True, False])
def test_a_finished_runs_precision_is_read_from_its_machine_line(monkeypatch, native):
    from qtbench.checkpoint import config_changes

    monkeypatch.setattr(nets, "native_bf16", lambda device: native)  # this machine
    avx2 = f"2 CPU cores (AMD EPYC), torch 2.13.0+cpu (1 threads, {nets.BF16_EMULATED}), Python 3.11.7"
    amx = f"8 CPU cores (Xeon), torch 2.13.0+cpu (1 threads, {nets.BF16_IN_HARDWARE}), Python 3.11.7"
    assert (nets.precision_ran("auto", avx2), nets.precision_ran("auto", amx)) == ("none", "bf16")
    here = "bf16" if native else "none"
    assert nets.precision_ran("auto") == nets.precision_ran("auto", "no such words") == here  # resolved here
    assert [nets.precision_ran(amp, amx) for amp in ("none", "bf16")] == ["none", "bf16"]  # pinned
    # "auto" run on an AVX2 CPU is the same run as "none"; made where bf16 is in hardware, it is not
    assert config_changes({"amp": "auto", "lr": 1}, {"amp": "none", "lr": 1}, machine=avx2) == {}
    assert config_changes({"amp": "auto"}, {"amp": "none"}, machine=amx) == {"amp": ("bf16", "none")}
    assert config_changes({"amp": "none"}, {"amp": "auto"}, machine=amx) == ({"amp": ("none", "bf16")} if native else {})


def test_the_transformers_default_to_float32():
    # float32 everywhere by default: "auto" made a result depend on the machine kind
    assert QTransformerConfig().amp == BCConfig().amp == DTConfig().amp == "none"
    assert BC(SPEC, BCConfig(bins=7, **SIZES)).amp == "none"


@pytest.mark.parametrize("capability, expected", [("AVX512", True), ("AVX2", False)])
def test_kernels_capped_at_avx2_never_run_bf16_in_hardware(monkeypatch, capability, expected):
    # a CPU with AVX512-BF16 multiplies bfloat16 only while its kernels may use AVX512
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert nets.native_bf16(torch.device("cpu")) is expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("algo_class, config", [
    (QTransformer, QTransformerConfig(n_bins=7, **SIZES)), (BC, BCConfig(bins=7, dropout=0.0, **SIZES)),
    (DecisionTransformer, DTConfig(**SIZES, dropout=0.0)),
])
def test_cuda_update_never_waits_for_the_device_and_matches_cpu(algo_class, config):
    torch.manual_seed(0)
    cpu = algo_class(SPEC, config)
    gpu = algo_class(SPEC, config, device="cuda")
    gpu.load_state_dict(cpu.state_dict())
    batch = _batch()
    on_gpu = batch.to_torch("cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any device-to-host wait in update() raises
    try:
        metrics = gpu.update(on_gpu)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert float(metrics["loss"]) == pytest.approx(float(cpu.update(batch)["loss"]), rel=1e-3)
    window = _mixed_window()
    np.testing.assert_allclose(gpu.act(window.to_torch("cuda")), cpu.act(window), atol=0.3)  # a bin or so apart at most
