"""Public reference implementations that `qtbench bench train --compare NAME` times beside ours.

Not part of the installed package: these harnesses import third-party packages (PyPI's
``q-transformer``, ``d3rlpy``) and patch one of them, so they live in the source checkout
and ``qtbench.train_bench`` loads this file by its path when ``--compare`` is given. The
reference is built at our algorithm's sizes and timed in the same process on the same
threads, alternating rounds with ours. ``BUILDERS[name](spec, config, batch_size, rng,
ours_params)`` returns rows of (row name, one update, trainable parameters, note).

The packages live in a separate virtual environment (they pull dependencies qtbench must
not), which also sees qtbench's venv, e.g.::

    python3 -m venv /tmp/qtref
    echo "import site; site.addsitedir('<qtbench venv>/lib/python3.11/site-packages')" \
        > /tmp/qtref/lib/python3.11/site-packages/qtbench_venv.pth
    /tmp/qtref/bin/pip install q-transformer d3rlpy torch==2.13.0   # CPU torch, no CUDA
    /tmp/qtref/bin/pip uninstall -y torchvision   # PyPI's build needs CUDA torch; transformers imports it
    /tmp/qtref/bin/python -m qtbench bench train --algo q_transformer --compare q_transformer_pypi
"""

from __future__ import annotations

import sys
import tempfile
import types
from typing import Any, Callable

import numpy as np

from qtbench.errors import QtbenchError
from qtbench.train_bench import count_params

Reference = tuple[str, Callable[[], object], int, str]  # (row name, one update, parameters, note)


def q_transformer_pypi(spec: Any, config: Any, batch_size: int, rng: np.random.Generator, ours_params: int) -> list[Reference]:
    """lucidrains' `q-transformer` (PyPI) at our depth/heads/bins/history/batch: one row at
    our width, one at the width whose parameter count is nearest ours.

    Its model only reads video, so each state vector is laid out as a 1-channel image
    (zero-padded to side x side) per frame of the history. Offline fixes, none of which
    touch the measured computation: its text conditioner loads T5 from the Hugging Face
    hub at construction, so it gets a locally built stand-in (never run: we pass
    precomputed instruction embeddings through its ``text_embeds`` argument); and
    `open_clip` (imported for an unused CLIP adapter) needs a torchvision build for CPU
    torch that PyPI lacks, so it is replaced by an empty module when it cannot import.
    """
    import importlib
    import importlib.util

    import torch

    if importlib.util.find_spec("q_transformer") is not None:
        try:  # the test import q_transformer's own import of open_clip would make
            importlib.import_module("open_clip")
        except Exception:  # noqa: BLE001 - PyPI's torchvision is CUDA-only; the adapter is unused
            sys.modules["open_clip"] = types.ModuleType("open_clip")
    try:
        import classifier_free_guidance_pytorch.t5 as cfg_t5
        from q_transformer import QLearner, QRoboticTransformer
        from transformers import T5Config, T5EncoderModel
    except ImportError as err:
        raise QtbenchError(
            f"the reference package q-transformer is not importable here ({err})",
            "install it into a separate venv and run this command with that venv's python "
            "(see benchmarks/references.py)",
        ) from err

    from importlib.metadata import version

    b, f, heads = batch_size, config.history, config.n_heads
    side = 4 * int(np.ceil(np.sqrt(spec.state_dim) / 4))  # divisible by MaxViT's total downsample (4)
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))

    def frames() -> torch.Tensor:
        flat = torch.zeros(b, f, side * side)
        flat[..., : spec.state_dim] = torch.randn(b, f, spec.state_dim, generator=g)
        return flat.view(b, 1, f, side, side)

    def build(d: int) -> tuple[Callable[[], object], int]:
        t5_config = T5Config(d_model=d, d_ff=2 * d, num_layers=1, num_heads=heads, vocab_size=8)
        cfg_t5.T5_CONFIGS[cfg_t5.DEFAULT_T5_NAME] = {"config": t5_config, "model": T5EncoderModel(t5_config), "tokenizer": None}
        model = QRoboticTransformer(
            vit=dict(num_classes=1, dim=d, dim_conv_stem=d // 4, dim_head=d // heads, heads=heads, depth=(1,),
                     window_size=side // 4, dropout=0.0, channels=1),
            num_actions=spec.action_dim, action_bins=config.n_bins, depth=config.n_layers, heads=heads,
            dim_head=d // heads, cond_drop_prob=0.0,
            q_head_attn_kwargs=dict(attn_heads=heads, attn_dim_head=d // heads, attn_depth=config.n_layers),
        )
        learner = QLearner(
            model, dataset=torch.utils.data.TensorDataset(torch.zeros(1)), batch_size=b,
            num_train_steps=1, learning_rate=config.learning_rate, discount_factor_gamma=config.gamma,
            checkpoint_folder=tempfile.mkdtemp(prefix="qtbench-qtref-"),
        )
        text = torch.randn(b, d, generator=g)
        args = (text, frames(), torch.randint(0, config.n_bins, (b, spec.action_dim), generator=g),
                frames(), text, torch.zeros(b), torch.rand(b, generator=g) < 0.1)

        def step() -> None:  # QLearner.forward's training-loop body, minus data loading and logging
            learner.optimizer.zero_grad()
            with learner.accelerator.autocast():
                loss, _ = learner.learn(*args, min_reward=0.0, monte_carlo_return=None)
                learner.accelerator.backward(loss)
            learner.accelerator.clip_grad_norm_(learner.model.parameters(), learner.max_grad_norm)
            learner.optimizer.step()
            learner.ema_model.update()

        return step, count_params(model)

    what = (f"q-transformer {version('q-transformer')}, {config.n_layers} layers, {heads} heads, "
            f"{config.n_bins} bins, {f} frames of {side}x{side}")
    same_width, params = build(config.d_model)
    rows = [("q_transformer_pypi (same width)", same_width, params, f"{what}, width {config.d_model} as ours")]
    # Its vision stem, FiLM text conditioning and cross-attention Q head make it ~4x larger at
    # equal width; parameters grow ~ width^2, so it is also run at the width whose parameter
    # count comes closest to ours (a multiple of 4 * heads: its rotary embedding needs it).
    step_of = 4 * heads
    width = max(step_of, step_of * round(config.d_model * np.sqrt(ours_params / params) / step_of))
    if width != config.d_model:
        step, small = build(width)
        rows.append(("q_transformer_pypi (same size)", step, small, f"{what}, width {width} (parameter count near ours)"))
    return rows


def d3rlpy_iql(spec: Any, config: Any, batch_size: int, rng: np.random.Generator, ours_params: int) -> list[Reference]:
    """d3rlpy's IQL with MLPs of our IQL's width/depth on [state window, instruction vector]."""

    try:
        import d3rlpy
        from d3rlpy.dataset import TransitionMiniBatch
    except ImportError as err:
        raise QtbenchError(
            f"the reference package d3rlpy is not importable here ({err})",
            "install it into a separate venv and run this command with that venv's python "
            "(see benchmarks/references.py)",
        ) from err

    hidden = [int(config.hidden_dim)] * int(config.n_layers)
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=hidden)
    algo = d3rlpy.algos.IQLConfig(
        batch_size=batch_size, actor_learning_rate=config.learning_rate, critic_learning_rate=config.learning_rate,
        gamma=config.gamma, tau=config.tau, expectile=config.expectile, weight_temp=config.beta,
        max_weight=config.max_weight, actor_encoder_factory=encoder, critic_encoder_factory=encoder,
        value_encoder_factory=encoder,
    ).create(device="cpu:0")
    obs_dim = spec.state_dim * config.history + int(getattr(config, "word_dim", 0))
    algo.create_impl((obs_dim,), spec.action_dim)
    b = batch_size

    def arr(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    batch = TransitionMiniBatch(
        observations=arr(b, obs_dim), actions=rng.uniform(-1, 1, (b, spec.action_dim)).astype(np.float32),
        rewards=np.zeros((b, 1), np.float32), next_observations=arr(b, obs_dim),
        next_actions=np.zeros((b, spec.action_dim), np.float32),
        terminals=(rng.random((b, 1)) < 0.1).astype(np.float32), intervals=np.ones((b, 1), np.float32),
        transitions=[],
    )
    modules = [m for name, m in vars(algo.impl.modules).items() if hasattr(m, "parameters") and not name.startswith("targ")]
    note = f"d3rlpy {d3rlpy.__version__} IQL: MLP {hidden}, observation {obs_dim} features"
    return [("d3rlpy_iql", lambda: algo.update(batch), count_params(*modules), note)]


# the --compare name -> builder of its rows (train_bench.REFERENCES names the algorithm each is compared with)
BUILDERS: dict[str, Callable[..., list[Reference]]] = {
    "q_transformer_pypi": q_transformer_pypi,
    "d3rlpy_iql": d3rlpy_iql,
}
