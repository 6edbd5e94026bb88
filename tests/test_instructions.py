import numpy as np

from qtbench.envs import instructions as ins


def test_counts_follow_the_paper_families():
    assert len(ins.instructions_for("drawer_open")) == 3
    assert len(ins.instructions_for("drawer_close")) == 3
    assert len(ins.instructions_for("pick_place")) == 18
    assert len(ins.instructions_for("move_near")) == 42
    assert len(ins.instructions_for("all")) == 66
    assert len({i.text for i in ins.INSTRUCTIONS}) == 66


def test_every_instruction_fits_the_text_space():
    for i in ins.INSTRUCTIONS:
        assert set(i.text) <= ins.TEXT_CHARSET
        assert len(i.text) <= ins.TEXT_MAX_LENGTH


def test_tokenize_keeps_word_order_and_pads():
    a = ins.tokenize("move the red can near the orange")
    b = ins.tokenize("move the orange near the red can")
    assert a.shape == (ins.MAX_TOKENS,) and a.dtype == np.int64
    assert not np.array_equal(a, b)
    assert sorted(a[a != 0]) == sorted(b[b != 0])  # same words, different order
    assert (a[7:] == ins.PAD_ID).all() and (a[:7] != ins.PAD_ID).all()
    assert ins.tokenize("open the purple drawerx")[3] == ins.UNK_ID


def test_tokenize_many_matches_tokenize():
    texts = ["open the top drawer", "close the top drawer", "open the top drawer"]
    out = ins.tokenize_many(texts)
    assert out.shape == (3, ins.MAX_TOKENS)
    for row, text in zip(out, texts):
        assert np.array_equal(row, ins.tokenize(text))


def test_categories_cover_every_skill_once():
    skills = [s for group in ins.CATEGORIES.values() for s in group]
    assert sorted(skills) == sorted(ins.SKILLS)
