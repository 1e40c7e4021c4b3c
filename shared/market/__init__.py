"""Market data: bars and timeframes (``bars``), the bar gate (``gate``), bars from trades
(``builder``), OHLCV files (``files``), the sample market (``synthetic``, ``sample``) and the
feeds the bot runs (``feeds``, ``feed_live``)."""
