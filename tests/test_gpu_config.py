"""BDHConfig: validation (one-line errors naming the field), dict round trip, presets."""

import dataclasses

import pytest

from bdh_gpu import BDH, PRESETS, BDHConfig, get_preset


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("n_head", 0, "BDHConfig.n_head: expected a positive int, got 0"),
        ("d", 2.5, "BDHConfig.d: expected a positive int, got 2.5"),
        ("N", True, "BDHConfig.N: expected a positive int, got True"),
        ("N", 7, "BDHConfig.N: expected an even int"),
        ("n_layer", -1, "BDHConfig.n_layer: expected a positive int"),
        ("vocab_size", 1, "BDHConfig.vocab_size: expected an int >= 2, got 1"),
        ("dropout", 1.0, "BDHConfig.dropout: expected a float in [0, 1), got 1.0"),
        ("dropout", "0.1", "BDHConfig.dropout"),
        ("U", "relative", "BDHConfig.U: expected one of rope, alibi, rope+alibi, none, got 'relative'"),
        ("variant", "gpt", "BDHConfig.variant: expected one of official, paper, normfree, got 'gpt'"),
        ("rope_theta", 1.0, "BDHConfig.rope_theta: expected a finite float > 1"),
        ("rope_theta", float("inf"), "BDHConfig.rope_theta"),
        ("alibi_max_bias", 0.0, "BDHConfig.alibi_max_bias: expected a finite float > 0"),
    ],
)
def test_validate_names_the_bad_field(field, value, needle):
    """Bad config: ValueError, one line, naming field, expected and got (also through from_dict and BDH())."""
    cfg = dataclasses.replace(BDHConfig(), **{field: value})
    for call in (cfg.validate, lambda: BDHConfig.from_dict({**BDHConfig().to_dict(), field: value}), lambda: BDH(cfg)):
        with pytest.raises(ValueError) as e:
            call()
        assert needle in str(e.value) and "\n" not in str(e.value)


def test_odd_N_allowed_without_rope():
    """Only the rotation pairs neurons: U=none or alibi takes any N."""
    assert BDHConfig(N=7, U="none").validate().n == 28
    assert BDHConfig(N=7, U="alibi").validate().N == 7


def test_dict_round_trip_and_unknown_keys():
    cfg = BDHConfig(n_head=3, d=10, N=6, n_layer=2, dropout=0.0, U="alibi", variant="paper", alibi_max_bias=2.0)
    assert BDHConfig.from_dict(cfg.to_dict()) == cfg
    assert BDHConfig.from_dict({"dropout": 0, "d": 8}).dropout == 0.0
    with pytest.raises(ValueError, match=r"unknown keys \['n_embd'\]"):
        BDHConfig.from_dict({"n_embd": 256})
    with pytest.raises(ValueError, match="expected a JSON object"):
        BDHConfig.from_dict([1, 2])


def test_presets():
    """paper-25m is the released default: 3nd + 2*256*d = 25,296,896 parameters, n = 32768."""
    assert set(PRESETS) == {"tiny", "small", "paper-25m"}
    big = get_preset("paper-25m")
    assert (big.n_head, big.d, big.N, big.n_layer, big.dropout, big.n) == (4, 256, 8192, 6, 0.1, 32768)
    assert big == BDHConfig()
    tiny = get_preset("tiny")
    assert sum(p.numel() for p in BDH(tiny).parameters()) == 3 * tiny.n * tiny.d + 2 * 256 * tiny.d
    tiny.d = 1
    assert PRESETS["tiny"].d == 32  # a copy
    with pytest.raises(ValueError, match="unknown preset 'huge'; valid presets: tiny, small, paper-25m"):
        get_preset("huge")
