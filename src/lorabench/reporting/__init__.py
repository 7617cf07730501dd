"""reporting: tables, plots and one offline HTML page from run records alone (report, sweep_report, html)."""
