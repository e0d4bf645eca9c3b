"""``mfclip weights list``: the registry's rows as a table, or two lines an entry where the
terminal is narrower than the table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from mfclip_cli.engines.weights.store import registry_status, user_store

WIDE_LIST = 120  # columns the table needs; narrower, one entry per two lines


def print_registry(console: Console) -> None:
    """Every registered checkpoint, the user's and the bundled ones, with the default in use,
    size, hash check and test AUC."""
    rows = registry_status()
    # the default in use: the user's store's, listed first, else the bundled one
    in_use = next((row for row in rows if row.get("default")), None)
    shown = []
    for row in rows:
        metrics = row.get("metrics")
        test = metrics.get("test") if isinstance(metrics, dict) else None
        auc = test.get("auc") if isinstance(test, dict) else None
        shown.append(
            {
                "name": row["name"],
                "source": row["source"],
                "config": row.get("config", ""),
                "demo": "yes" if row.get("demo") else "no",
                "default": ("yes" if row is in_use else "yes (overridden)")
                if row.get("default")
                else "no",
                "size": "-" if row["size"] is None else f"{row['size'] / 1e6:.1f} MB",
                "sha256": row.get("sha256", "")[:12],
                "hash check": row["check"],
                "test AUC": f"{auc:.4f}" if _is_number(auc) else "-",
            }
        )
    title = f"registered weights (yours in {user_store()}; details: mfclip weights info NAME)"
    if console.width >= WIDE_LIST:
        table = Table(title=title)
        for column in shown[0] if shown else ():
            table.add_column(
                column,
                no_wrap=column in ("name", "sha256"),
                justify="right" if column in ("size", "test AUC") else "left",
            )
        for values in shown:
            table.add_row(*values.values())
        console.print(table)
        return
    # narrower (a pipe, a CI log): a table cut every column to "MIS…" (audit S F11)
    console.print(title, highlight=False, markup=False, soft_wrap=True)
    for values in shown:
        details = ", ".join(f"{key} {values[key]}" for key in ("source", "config", "demo"))
        console.print(
            f"{values['name']} ({details}, default {values['default']})\n"
            f"  {values['size']}, sha256 {values['sha256']}, hash check {values['hash check']}, "
            f"test AUC {values['test AUC']}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def _is_number(value: object) -> bool:
    """A figure a registry entry can show (one edited by hand may hold anything)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
