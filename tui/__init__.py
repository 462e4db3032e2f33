"""lorapod's terminal interfaces: the ``lorapod`` command line (``tui.cli``) and the Textual dashboard.

This package reaches the ledger, settings and providers only through ``store`` and ``remote`` functions.
Importing it is cheap: Textual loads only when the dashboard opens, and torch never loads here.
"""
