"""Which bandwidth each group's collectives get: node-spanning collectives use every rail,
point-to-point and HSDP replica groups one NIC (DESIGN.md sec. 4; nccl-tests doc/PERFORMANCE.md)."""

import pytest

from planner.cost.bind import link_fit, strategy_values
from planner.strategy import Strategy
from planner.inputs.load import load_cluster


def test_spanning_collective_uses_every_rail_capped_by_nvlink():
    c = load_cluster("dgx-h100", 2)  # 8 GPUs x one 50 GB/s NIC at 0.85; NVLink 450 GB/s at 0.8
    nic = 50e9 * 0.85
    assert link_fit("one_nic", "all_gather", c)[0] == pytest.approx(nic)
    assert link_fit("inter_node", "all_gather", c)[0] == pytest.approx(min(8 * nic, 450e9 * 0.8))
    assert link_fit("inter_node", "p2p", c)[0] == pytest.approx(nic)  # a send uses one NIC
    # a topology whose NICs are shared 4 ways (l40s-pcie) gets 2 NICs' worth per node, not 8
    pcie = load_cluster("l40s-pcie", 2)
    one = pcie.inter_node.bw_gb_per_s * 1e9 * pcie.inter_node.efficiency / pcie.inter_node.gpus_per_nic
    assert link_fit("inter_node", "all_reduce", pcie)[0] == pytest.approx(
        min(pcie.gpus_per_node * one, link_fit("intra_node", "all_reduce", pcie)[0]))


def test_groups_pick_their_links():
    c = load_cluster("dgx-h100", 2)
    zero3 = strategy_values(Strategy("shard", "zero3", "colocated", 16, 16, t_sh=16, s_sh=16), c)
    assert zero3["bw_ag_T"] == zero3["bw_ag_S"] == pytest.approx(link_fit("inter_node", "all_gather", c)[0])
    hsdp = strategy_values(Strategy("shard", "hsdp", "colocated", 16, 16, t_sh=8, s_sh=8, r_S=2), c)
    assert hsdp["bw_ag_S"] == pytest.approx(c.intra_node.fit("all_gather")[0])
    assert hsdp["bw_ar_R"] == pytest.approx(c.inter_node.fit("all_reduce")[0])  # rail-aligned replicas: one NIC
    disagg = strategy_values(Strategy("shard", "zero3", "disaggregated", 8, 8, t_sh=8, s_sh=8), c)
    assert disagg["bw_p2p_X"] == pytest.approx(c.inter_node.fit("p2p")[0])
