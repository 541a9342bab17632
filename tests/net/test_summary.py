from toolkit.net.summary import summarize


def test_layer_table_and_counts():
    s = summarize(height=128, width=128)
    assert len(s.rows) == 91  # the seed's table lists 91 layer calls
    assert s.params_used == 493_408
    assert s.params_per_call == 677_824
    assert s.rows[0].name == "convblock1.0" and s.rows[0].shape == (1, 32, 128, 128)
    assert s.rows[-1].name == "convblock8_.0" and s.rows[-1].shape == (1, 1, 128, 128)
    assert "677,824 = 493,408 used + 28,768" in s.explain() and "155,648" in s.explain()


def test_shapes_follow_the_input_size():
    s = summarize(height=64, width=32)
    assert s.rows[-1].shape == (1, 1, 64, 32)
    assert s.params_per_call == 677_824
