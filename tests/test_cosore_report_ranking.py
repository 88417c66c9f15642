"""The COSORE LSTM report ranks site differences only where the test set is long enough."""

from __future__ import annotations

import pandas as pd

from globalflux.workflows._cosore_efflux_report import ranked_differences


def test_sites_with_few_test_days_are_not_ranked():
    table = pd.DataFrame({"n_test": [17, 23, 60, 200, 90],
                          "nse_test": [0.9, 0.5, 0.6, 0.7, None],
                          "lt_nse_test": [-115.0, -3.0, 0.5, 0.8, 0.2]})
    d = ranked_differences(table, 60)
    assert list(d.index) == [2, 3]  # 17 and 23 test days (+116 and +3.5 NSE) are left out
    assert d.round(6).tolist() == [0.1, -0.1]
    assert len(ranked_differences(table, 10)) == 4
