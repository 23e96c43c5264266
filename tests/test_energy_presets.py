"""Energy models as data: the shipped presets, the paper's Table III, user files."""

from __future__ import annotations

import json

import pytest

from htakl_deploy.energy.models import EnergyModel, load_energy_model, load_preset, preset_names
from htakl_deploy.energy.report import energy_report
from htakl_deploy.errors import UserError

# Table III of the HTA-KL paper (../shared/seeds/002_*.txt, "Methods | Architecture | Firing Rate
# | OPs | ACs | MACs | Energy"), transcribed: (architecture, method, ACs, MACs, energy in mJ).
TABLE_III = [
    ("ResNet19", "KDSNN", 2.21e9, 26.68e6, 2.11173),
    ("ResNet19", "LASNN", 2.78e9, 26.68e6, 2.62473),
    ("ResNet19", "BKDSNN", 1.85e9, 26.68e6, 1.78773),
    ("ResNet19", "HTA-KL", 2.11e9, 26.68e6, 2.02173),
    ("ResNet20", "KDSNN", 213.25e6, 53.99e6, 0.440279),
    ("ResNet20", "LASNN", 238.88e6, 53.99e6, 0.463346),
    ("ResNet20", "BKDSNN", 214.3e6, 53.99e6, 0.441224),
    ("ResNet20", "HTA-KL", 198.2e6, 53.99e6, 0.426734),
    ("VGG16", "KDSNN", 196.63e6, 274.24e6, 1.438471),
    ("VGG16", "LASNN", 217.22e6, 274.24e6, 1.457002),
    ("VGG16", "BKDSNN", 202.53e6, 274.24e6, 1.443781),
    ("VGG16", "HTA-KL", 199.39e6, 274.24e6, 1.440955),
]


@pytest.mark.parametrize("arch, method, acs, macs, energy_mj", TABLE_III)
def test_paper_45nm_reproduces_table_iii(arch, method, acs, macs, energy_mj):
    m = load_preset("paper-45nm")
    got_mj = m.energy_pj(acs=acs, macs=macs) * 1e-9
    # the paper prints 5-6 decimals of mJ: agree to half a unit of the last printed digit
    decimals = len(repr(energy_mj).split(".")[1])
    assert abs(got_mj - energy_mj) <= 0.5 * 10.0 ** -decimals, (arch, method, got_mj)


def test_presets_ship_with_sources_and_values():
    assert preset_names() == ["horowitz-int8", "loihi1", "paper-45nm"]
    p = load_preset("paper-45nm")
    assert (p.e_ac_pj, p.e_mac_pj, p.e_neuron_update_pj, p.e_spike_pj) == (0.9, 4.6, 0.0, 0.0)
    h = load_preset("horowitz-int8")
    assert (h.e_ac_pj, h.e_mac_pj) == (0.03, pytest.approx(0.2 + 0.03))  # AC = add; MAC = mult + add
    lo = load_preset("loihi1")
    assert (lo.e_ac_pj, lo.e_neuron_update_pj, lo.e_spike_pj) == (23.6, 81.0, 1.7)
    for m in (p, h, lo):
        assert "Horowitz" in m.source or "Davies" in m.source
    assert "Davies" in lo.source and "Horowitz" in h.source


def test_unknown_preset_lists_the_presets():
    with pytest.raises(UserError, match="expected one of horowitz-int8, loihi1, paper-45nm"):
        load_preset("loihi9")


def test_energy_report_prices_every_count():
    # a hand-made count: 10 ACs + 2 MACs in one layer, 4 spikes and 6 neuron updates, 2 samples
    counts = {
        "timesteps": 3, "samples": 2, "input_encoding": "analog",
        "layers": [{"name": "c", "acs": 10, "macs": 2}],
        "neurons": [{"name": "a", "neuron_updates": 6, "spikes": 4}],
        "totals": {},
        "per_sample": {"analytic_acs": 3.0, "analytic_macs": 1.0, "paper_style_acs": 4.0, "ann_teacher_macs": 7},
    }
    rep = energy_report(counts, load_preset("loihi1"), backend="x")
    assert rep["layers"][0]["energy_pj"] == pytest.approx(12 * 23.6)
    assert rep["neurons"][0]["energy_pj"] == pytest.approx(6 * 81 + 4 * 1.7)
    assert rep["totals"]["energy_pj"] == pytest.approx(12 * 23.6 + 6 * 81 + 4 * 1.7)
    assert rep["per_sample"]["energy_pj"] == pytest.approx((12 * 23.6 + 6 * 81 + 4 * 1.7) / 2)
    assert rep["per_sample"]["analytic_energy_pj"] == pytest.approx(4 * 23.6 + (6 * 81 + 4 * 1.7) / 2)
    assert rep["per_sample"]["ann_teacher_energy_pj"] == pytest.approx(7 * 23.6)
    assert rep["energy_model"]["name"] == "loihi1" and "Davies" in rep["energy_model"]["source"]


def test_user_toml_and_json(tmp_path):
    t = tmp_path / "chip.toml"
    t.write_text('source = "datasheet"\ne_ac_pj = 1\ne_mac_pj = 2.5\ne_spike_pj = 0.5\n')
    m = load_energy_model(t)
    assert m == EnergyModel("chip", "datasheet", 1.0, 2.5, 0.0, 0.5)
    j = tmp_path / "chip.json"
    j.write_text(json.dumps({"name": "mine", "source": "s", "e_ac_pj": 0.1, "e_mac_pj": 0.2}))
    assert load_energy_model(j).name == "mine"


@pytest.mark.parametrize(
    "text, expected",
    [
        ('source = "s"\ne_ac_pj = 1\ne_mac_pj = 2\ne_acc_pj = 3\n', "unknown key(s) ['e_acc_pj']"),
        ('source = "s"\ne_ac_pj = 1\n', "missing key(s) ['e_mac_pj']"),
        ('source = "s"\ne_ac_pj = -1\ne_mac_pj = 2\n', "'e_ac_pj' must be a finite energy in 0..1e+06 pJ"),
        ('source = "s"\ne_ac_pj = 1\ne_mac_pj = "4.6"\n', "'e_mac_pj' must be a number"),
        ('source = "s"\ne_ac_pj = 1\ne_mac_pj = true\n', "'e_mac_pj' must be a number"),
        ('source = "s"\ne_ac_pj = nan\ne_mac_pj = 1\n', "'e_ac_pj' must be a finite energy"),
        ('source = 3\ne_ac_pj = 1\ne_mac_pj = 1\n', "'source' must be a string"),
        ('e_ac_pj = = 1\n', "not valid TOML"),
    ],
)
def test_bad_user_file_names_file_and_key(tmp_path, text, expected):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(UserError) as e:
        load_energy_model(f)
    assert str(f) in str(e.value) and expected in str(e.value), str(e.value)


def test_bad_user_file_kinds(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        load_energy_model(tmp_path / "none.toml")
    (tmp_path / "m.yaml").write_text("x: 1")
    with pytest.raises(UserError, match=r"\.toml or \.json"):
        load_energy_model(tmp_path / "m.yaml")
    (tmp_path / "m.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="expected one table"):
        load_energy_model(tmp_path / "m.json")
