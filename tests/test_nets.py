import pytest
import torch

from qtbench.algorithms.base import EnvSpecInfo, Window
from qtbench.envs.instructions import VOCABULARY, tokenize_many
from qtbench.errors import QtbenchError
from qtbench.nets import CausalTransformer, ContextTokens, InstructionEncoder, autocast

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
    context, body = ContextTokens(SPEC, history=4, d_model=16, n_heads=2), CausalTransformer(16, 2, 2)
    window = _window()
    out = body(*context(window))
    assert out.shape == (3, 5, 16) and torch.isfinite(out).all()  # [instruction, s_1..s_4]
    # Changing a padded state or a later state must not change earlier outputs.
    window.states[0, 0] += 100.0
    window.states[1, 3] += 100.0
    out2 = body(*context(window))
    assert torch.allclose(out[0, 3:], out2[0, 3:], atol=1e-5)
    assert torch.allclose(out[1, :4], out2[1, :4], atol=1e-5)
    assert not torch.allclose(out[1, 4], out2[1, 4])


def _encoder():
    torch.manual_seed(0)
    return InstructionEncoder(len(VOCABULARY), 14, d_model=32, n_heads=4)


def test_word_order_changes_the_instruction_encoding():
    texts = ["move the orange near the red can", "move the red can near the orange"]
    ids = torch.as_tensor(tokenize_many(texts))
    assert sorted(ids[0].tolist()) == sorted(ids[1].tolist())  # the same words
    with torch.no_grad():
        a, b = _encoder()(ids)
    # A bag of words (or a mean of word + position embeddings) would give exactly a == b.
    assert (a - b).norm() > 0.01 * a.norm()


def test_batch_encoding_is_the_distinct_rows_encoded_then_gathered():
    texts = ["open the top drawer", "move the orange near the red can", "open the top drawer",
             "close the middle drawer", "move the orange near the red can", "open the top drawer"]
    ids = torch.as_tensor(tokenize_many(texts))
    encoder = _encoder()
    with torch.no_grad():
        batch = encoder(ids)
        distinct, inverse = torch.unique(ids, dim=0, return_inverse=True)
        assert len(distinct) == 3
        torch.testing.assert_close(batch, encoder.encode(distinct)[inverse], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(batch, encoder.encode(ids), rtol=1e-5, atol=1e-6)  # the GPU path
        # ... and each row's encoding is that instruction's alone: no other row, no padding
        # length (trailing padding dropped) changes it
        for row, text in zip(batch, texts):
            alone = encoder(torch.as_tensor(tokenize_many([text])))[0]
            torch.testing.assert_close(row, alone, rtol=1e-5, atol=1e-6)
            trimmed = torch.as_tensor(tokenize_many([text]))[:, : len(text.split())]
            torch.testing.assert_close(row, encoder.encode(trimmed)[0], rtol=1e-5, atol=1e-6)


def test_decoding_with_the_cache_equals_the_full_forward():
    torch.manual_seed(0)
    context, body = ContextTokens(SPEC, history=4, d_model=16, n_heads=2), CausalTransformer(16, 2, 2)
    window = _window()
    ctx, ignore = context(window)
    extra = torch.randn(3, 3, 16)
    full = body(torch.cat([ctx, extra], 1), torch.cat([ignore, ignore.new_zeros(3, 3)], 1))
    cache = body.prefill(ctx, ignore)
    one = body.decode(cache, extra[:, :1])  # one token, then two more
    two = body.decode(cache, extra[:, 1:])
    torch.testing.assert_close(torch.cat([one, two], 1), full[:, -3:], rtol=1e-5, atol=1e-5)
    assert cache.ignore.shape == (3, 5 + 3)


def test_autocast_modes():
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "none"):
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == torch.float32
    with pytest.raises(QtbenchError, match="bf16"):
        autocast(torch.device("cpu"), "fp8")
