"""The arena's last stage: presenting a :class:`~descent.arena.records.Results` — the
figures (``figures``, drawn by ``plots``), ``index.html`` (``report``), the terminal
summary (``summary``) and the landscape pictures (``gallery``)."""
