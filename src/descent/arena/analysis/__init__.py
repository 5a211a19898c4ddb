"""The arena's third stage: from runs to conclusions. Per-setting statistics and
tunability (``metrics``), then ranks, leaderboards and the recommendation with its
reasons (``recommend``)."""
