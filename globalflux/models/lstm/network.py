"""The network: one ``torch.nn.LSTM`` layer, dropout on its output and a linear head.

Static site attributes are concatenated to the dynamic inputs of every time step (Kratzert et
al. 2019, HESS 23:5089, "static features at every step"). torch is imported lazily so that
importing :mod:`globalflux.models.lstm` stays cheap.
"""

from __future__ import annotations

__all__ = ["EffluxLSTM"]


def _torch():
    """torch, imported lazily: it is the optional extra [lstm] (hundreds of MB)."""
    from ...extras import require

    return require("torch", "lstm", what="the LSTM (globalflux.models.lstm)")


# --------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------
def _module_class():
    torch = _torch()
    nn = torch.nn

    class _EffluxLSTM(nn.Module):
        """LSTM -> dropout -> linear head; statics concatenated to every step's inputs.

        Parameters
        ----------
        n_dynamic, n_static
            Number of daily and of static inputs.
        hidden_size
            LSTM hidden units (128 in Smykalov et al.).
        dropout
            Dropout probability on the LSTM output before the head (0.2).
        """

        def __init__(self, n_dynamic: int, n_static: int, hidden_size: int = 128,
                     dropout: float = 0.2):
            super().__init__()
            self.n_dynamic = n_dynamic
            self.n_static = n_static
            self.hidden_size = hidden_size
            self.lstm = nn.LSTM(n_dynamic + n_static, hidden_size, batch_first=True)
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(hidden_size, 1)

        def forward(self, x_dyn, x_static=None, state=None):
            """``x_dyn`` (batch, time, n_dynamic), ``x_static`` (batch, n_static), ``state``
            ``(h, c)`` each (1, batch, hidden) or None -> ``(y (batch, time), (h, c))``."""
            if self.n_static:
                stat = x_static[:, None, :].expand(-1, x_dyn.shape[1], -1)
                x = torch.cat([x_dyn, stat], dim=-1)
            else:
                x = x_dyn
            out, new_state = self.lstm(x, state)
            y = self.head(self.dropout(out)).squeeze(-1)
            return y, new_state

    return _EffluxLSTM


def EffluxLSTM(n_dynamic: int, n_static: int, hidden_size: int = 128, dropout: float = 0.2):
    """Build the network (a ``torch.nn.Module``); see the module docstring."""
    return _module_class()(n_dynamic, n_static, hidden_size, dropout)

